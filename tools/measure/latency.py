"""make bench: the charger's timings (docs/performance.md): the broker's round trip, a cap
or limit write -> the pilot's duty, a command -> its reply and push.completed, unplug and C->B
-> the contactor open, a dynamic limit's deadline -> the failsafe, the live page's cost to the
bench tick, and how fast the simulation runs. Each function runs its own charger (make sim's
Sim in real time, or a rig in bench time) and returns its samples; the *_row(s) functions
turn them into make bench's table rows (tools/measure/perf.py gathers the table).
"""
import json
import random
import socket
import statistics
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

from tools.bench.rig import InProcessRig, ProcessRig
from tools.bench.sim import parse
from tools.bench.sim_charger import Sim
from tools.client import Charger


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def broker_round_trip(broker, n):
    got = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda *a: got.set()
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("perf/rtt")
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", broker.port)
    pub.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as evctl does
    pub.loop_start()
    time.sleep(0.5)
    out = []
    for _ in range(n):
        got.clear()
        time.sleep(random.random() * 0.01)
        t0 = time.perf_counter()
        pub.publish("perf/rtt", b"x")
        got.wait(5)
        out.append((time.perf_counter() - t0) * 1000)
    for c in (sub, pub):
        c.loop_stop()
        c.disconnect()
    return out


def live_latencies(broker, n, state_dir):
    """Cap write -> duty, and command -> reply / push.completed, on the real-time sim."""
    sim = Sim(parse(["--broker", broker.address, "--state-dir", state_dir,
                     "--device-id", "perf-1"]))
    changed = threading.Event()
    stamps = []
    drive = sim.bench.drive_outputs

    def watched(counts, contactor):
        if counts != sim.bench.duty_counts:
            stamps.append(time.perf_counter())
            changed.set()
        drive(counts, contactor)

    sim.bench.drive_outputs = watched
    sim.start()
    threading.Thread(target=sim.run, daemon=True).start()
    c = Charger(broker.address, "perf-1")
    try:
        c.wait(lambda: c.availability == "online", 20)
        with sim.lock:
            sim.bench.set_ev({"connected": True, "request": True})
        time.sleep(3)
        def lowered(kind, i, body):
            # A lower value each time: a decrease reaches the pilot at the next tick, a raise
            # only at the vehicle's pace (once per 5 s), which is not what is measured here.
            time.sleep(random.random() * 0.01)  # land anywhere in the 10 ms control tick
            changed.clear()
            t0 = time.perf_counter()
            c.client.publish(c.base + kind, json.dumps(dict(body, requestId="p%d" % i)))
            if not changed.wait(5):
                raise RuntimeError("the duty did not change")
            return (stamps[-1] - t0) * 1000

        # 0.1 A apart, a new duty each, from 31.9 A (the vehicle already gets 32 A) down,
        # never under 6 A (nothing is offered there, so nothing would change).
        amps = [32 - 0.1 * (i + 1) for i in range(n)]  # n <= 250 (main() checks)
        cap_ms = [lowered("settings", i, {"settings": {"max_charge_rate": {
            "value": round(amps[i] * 0.23, 3), "unit": "kw"}}}) for i in range(n)]
        # Back to 32 A for the limits: a rise waits for the 5 s pacing.
        c.request("settings", {"settings": {"max_charge_rate": {"value": 50, "unit": "kw"}}})
        time.sleep(6)
        limit_ms = [lowered("limit", i, {"limit": {"value": round(amps[i], 1), "unit": "a"},
                                         "ttl": 600, "source": "bench"}) for i in range(n)]
        c.request("limit", {"limit": None})
        ack_ms, done_ms = [], []
        for i in range(n):
            aid = "act_perf_%d" % i
            time.sleep(random.random() * 0.01)
            t0 = time.perf_counter()
            reply = c.command("charge", actionId=aid)
            ack_ms.append((time.perf_counter() - t0) * 1000)
            assert reply["meta"]["status"] == 202
            c.wait(lambda: any(e["type"] == "push.completed" and e["data"]["actionId"] == aid
                               for e in c.events[-5:]), 5)
            done_ms.append((time.perf_counter() - t0) * 1000)
        return cap_ms, limit_ms, ack_ms, done_ms
    finally:
        c.close()
        sim.stop.set()
        time.sleep(0.1)
        with sim.lock:
            sim.shutdown()


def page_cost(broker, state_dir, seconds=20):
    """The live page's cost to the real-time bench: the tick period with no page and with
    the page served to one reader, in alternating 5 s turns under the same load (a cap write
    every 0.25 s), so the machine's own drift falls on both alike."""
    from tools.bench.broker import free_port
    from tools.bench.page.server import PageServer
    sim = Sim(parse(["--broker", broker.address, "--state-dir", state_dir,
                     "--device-id", "perf-page"]))
    stamps = []
    tick = sim._tick

    def timed():
        stamps.append(time.perf_counter())
        tick()

    sim._tick = timed
    sim.start()
    threading.Thread(target=sim.run, daemon=True).start()
    c = Charger(broker.address, "perf-page")
    periods = {False: [], True: []}
    pushes = [0]

    def read(stream):
        for line in stream:
            pushes[0] += line.startswith(b"data:")

    try:
        c.wait(lambda: c.availability == "online", 20)
        with sim.lock:
            sim.bench.set_ev({"connected": True, "request": True})
        time.sleep(3)
        for i in range(4):
            page = None
            if i % 2:
                page = PageServer(broker.address, ["perf-page"], port=free_port()).start()
                stream = urllib.request.urlopen(page.url + "events", timeout=30)
                threading.Thread(target=read, args=(stream,), daemon=True).start()
            del stamps[:]
            end, n = time.monotonic() + seconds / 4, 0
            while time.monotonic() < end:
                c.cap(3.5 if n % 2 else 7.0)
                n += 1
                time.sleep(0.25)
            periods[bool(page)] += [(b - a) * 1000 for a, b in zip(stamps, stamps[1:])]
            if page:
                page.stop()
        return periods[False], periods[True], pushes[0]
    finally:
        c.close()
        sim.stop.set()
        time.sleep(0.1)
        with sim.lock:
            sim.shutdown()


def open_latencies(trials, state_dir):
    """Bench ms from unplug, and from C->B, to the contactor open (firmware under micropython)."""
    rig = ProcessRig(state_dir)
    unplug, c_to_b = [], []
    start = time.perf_counter()
    t_start = rig.bench.t
    try:
        for i in range(trials):
            rig.ev(connected=True, request=True)
            rig.run_until(lambda: rig.bench.contactor, 5000)
            rig.run(200)
            t0 = rig.bench.t
            if i % 2:
                rig.ev(connected=False)
                out = unplug
            else:
                rig.ev(request=False)
                out = c_to_b
            rig.run_until(lambda: not rig.bench.contactor, 1000)
            out.append(rig.bench.contactor_log[-1][0] - t0)
            rig.ev(connected=False, request=True)
            rig.run(100)
        speed = (rig.bench.t - t_start) / 3600000 / (time.perf_counter() - start)
    finally:
        rig.close()
    return unplug, c_to_b, speed


def expiry_accuracy(trials, state_dir):
    """Bench ms from a dynamic limit's deadline to the failsafe on the pilot (micropython)."""
    rig = ProcessRig(state_dir)
    out = []
    try:
        rig.ev(connected=True, request=True)
        rig.run_until(lambda: rig.bench.contactor, 5000)
        rig.request("settings", {"requestId": "f", "settings": {
            "failsafe_charge_rate": {"value": 1.38, "unit": "kw"}}})
        for i in range(trials):
            rig.run(6000)  # the next limit is a raise: let the 5 s pacing pass
            rig.request("limit", {"requestId": "l%d" % i, "limit": {"value": 16, "unit": "a"},
                                  "ttl": 2, "source": "bench"})
            taken = rig.bench.t - 10  # the process rig answers a tick after taking it
            rig.run_until(lambda: rig.bench.duty_counts == 1000, 5000)  # 6 A
            out.append(rig.bench.duty_log[-1][0] - (taken + 2000))
    finally:
        rig.close()
    return out


def cpython_speed(state_dir):
    rig = InProcessRig(state_dir)
    rig.ev(connected=True, request=True)
    t = time.perf_counter()
    rig.run(3600 * 1000)
    return 1.0 / (time.perf_counter() - t)


def rows(rtt, cap_ms, limit_ms, expiry, ack_ms, done_ms, unplug, c_to_b):
    """The table's first rows: the latencies, each against the broker's round trip or its
    limit."""
    med = statistics.median
    return [
        ("broker round trip (publish -> subscriber)", "%.2f ms median, %.2f ms p99"
         % (med(rtt), pct(rtt, 99)), "the reference for the two rows below"),
        ("cap write -> pilot duty changed", "%.2f ms median, %.2f ms p99"
         % (med(cap_ms), pct(cap_ms, 99)), "%.1fx the broker round trip (target <= 2x); "
         "includes up to one 10 ms control tick" % (med(cap_ms) / med(rtt))),
        ("limit request -> pilot duty changed", "%.2f ms median, %.2f ms p99"
         % (med(limit_ms), pct(limit_ms, 99)), "%.1fx the broker round trip; a lower limit, "
         "like the cap (a raise waits for the 5 s pacing)" % (med(limit_ms) / med(rtt))),
        ("dynamic limit deadline -> failsafe on the pilot (bench time)",
         "%d ms median, %d ms max (%d trials)" % (med(expiry), max(expiry), len(expiry)),
         "target: within one 10 ms tick (the bench applies outputs a step later)"),
        ("command -> acknowledged reply", "%.2f ms median, %.2f ms p99"
         % (med(ack_ms), pct(ack_ms, 99)), "%.1fx broker round trip (request + reply: 2 hops)"
         % (med(ack_ms) / med(rtt))),
        ("command -> push.completed", "%.2f ms median, %.2f ms p99"
         % (med(done_ms), pct(done_ms, 99)), "%.1fx broker round trip"
         % (med(done_ms) / med(rtt))),
        ("unplug -> contactor open (bench time)", "%d ms median, %d ms max (%d trials)"
         % (med(unplug), max(unplug), len(unplug)), "limit 100 ms, target < 30 ms; "
         "one PWM period is 1 ms, one control tick 10 ms"),
        ("C->B -> contactor open (bench time)", "%d ms median, %d ms max (%d trials)"
         % (med(c_to_b), max(c_to_b), len(c_to_b)), "limit 100 ms, target < 30 ms"),
    ]


def speed_row(mp_speed, cp_speed, heap_session):
    """The simulation's speed: micropython in lockstep (open_latencies), CPython in-process
    (cpython_speed), and the heap probe's session (tools/measure/memory.py), if it passed."""
    full = heap_session
    return ("simulation speed", "%.3g h/s micropython lockstep, %.3g h/s CPython in-process, "
            "%.3g h/s heap session" % (mp_speed, cp_speed,
                                       full["hours"] / full["wall_s"] if full else 0),
            "real time is 0.00028 h/s")


def page_row(no_page, with_page, pushes):
    return ("bench tick period, the live page open (make sim)",
            "%.2f ms p99, %.2f ms max (no page: %.2f ms p99, %.2f ms max)" % (
                pct(with_page, 99), max(with_page), pct(no_page, 99), max(no_page)),
            "10 ms ticks; %d pushes read; the page is an MQTT client in the launcher's "
            "process, never on the bench's lock" % pushes)
