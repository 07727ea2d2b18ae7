"""make bench: the charger's numbers against the physical limits (docs/performance.md).

Runs the simulated charger (agent under micropython) on a real broker and prints one table;
writes the figures as JSON to build/bench.json. The memory figures are taken for each way
the agent runs here (tools/paths.py BUILDS): the pip wheel's 64-bit micropython with the
agent as .mpy in the heap, and make unix32's 32-bit v1.28.0 with the agent as .mpy and
frozen (as on an ESP32 image).
"""
import argparse
import glob
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

from tools.bench import children
from tools.bench.broker import Broker
from tools.bench.rig import InProcessRig, ProcessRig
from tools.evctl import Charger
from tools.bench.sim import Sim, parse
from tools.device import manifest, unix32
from tools.device.deploy import build_tree, sources as deploy_sources
from tools.measure import cloud, fleet, site_day, wear
from tools.paths import AGENT_MANIFEST, BOARDS, BUILD, MPY_LIB, ROOT, micropython

# (build, what it is, what to compare its peak and its smallest heap with): the rows of
# the memory figures. The wheel cannot have the agent frozen (it is a prebuilt binary).
MEMORY_BUILDS = (
    ("wheel", "64-bit wheel, .mpy in heap",
     "64-bit objects (twice an ESP32's) and the bytecode in the heap", "the old figures"),
    ("unix32-mpy", "32-bit v1.28.0, .mpy in heap",
     "an ESP32 running make deploy's .mpy", "an ESP32 heap starts at 56K"),
    ("unix32", "32-bit v1.28.0, frozen",
     "an ESP32 image with the agent frozen: target <= 24 KB", "target: passes at 40K"))
HEAP_SIZES = list(range(16, 129, 4))  # KB: the smallest passing heap is searched in these
TARGET_HEAP = ("unix32", "40K")  # the long session runs again at this heap, no growth


def module_names():
    """The modules the simulated agent imports (ssl only with TLS), each after the modules
    it imports, so that the import probe charges each module with its own cost."""
    entries = manifest.files(AGENT_MANIFEST) + [
        manifest.Entry(os.path.join(BOARDS, "sim", n + ".py"), n + ".py", None, None)
        for n in ("sim_board", "sim_link")]
    deps = {}
    for e in entries:
        name = os.path.splitext(e.target)[0].replace("/__init__", "").replace("/", ".")
        with open(e.source) as f:
            deps[name] = set(re.findall(r"^\s*(?:import|from)\s+([\w.]+)", f.read(), re.M))
    deps.pop("ssl")
    order = []
    while len(order) < len(deps):
        ready = sorted(n for n in deps if n not in order and deps[n] & set(deps) <= set(order))
        order += ready or sorted(set(deps) - set(order))[:1]  # a cycle: break it anywhere
    return order


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


def flash_writes(n, state_dir):
    """Cap writes through the firmware under micropython, the value changing every 10th; a
    flash write is a new inode of the cap's record (each write is a temp file renamed)."""
    rig = ProcessRig(state_dir)
    record = os.path.join(state_dir, "cap")
    writes, changes, value, last = 0, 0, 7.0, None
    try:
        for i in range(n):
            if i % 10 == 0:
                value = 7.0 if value != 7.0 else 7.5
                changes += 1
            assert rig.settings(max_charge_rate=value)["success"]
            ino = os.stat(record).st_ino if os.path.exists(record) else None
            writes += ino is not None and ino != last
            last = ino
    finally:
        rig.close()
    return writes, changes


def cpython_speed(state_dir):
    rig = InProcessRig(state_dir)
    rig.ev(connected=True, request=True)
    t = time.perf_counter()
    rig.run(3600 * 1000)
    return 1.0 / (time.perf_counter() - t)


def probe(build, script, *args, heapsize="256K", timeout=900):
    exe, env = micropython(build)
    out = subprocess.run(exe + ["-X", "heapsize=" + heapsize,
                                os.path.join(ROOT, "tools", "measure", "probes", script), *args],
                         env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def session(build, broker, size, hours, log=None):
    """The heap probe's figures if its session passed (no MemoryError, one MQTT connection
    throughout, the last cap applied), else None; `log` gets (size, why) for every session."""
    exe, env = micropython(build)
    with tempfile.TemporaryDirectory(prefix="bench-heap-") as state:
        out = subprocess.run(exe + ["-X", "heapsize=" + size, os.path.join(
            ROOT, "tools", "measure", "probes", "heap_probe.py"), broker.address, str(hours),
            state], env=env, capture_output=True, text=True, timeout=900)
    lines = (out.stdout + out.stderr).strip().splitlines()
    r = json.loads(lines[-1]) if out.returncode == 0 and lines else None
    if r is not None:
        # The live figures count the interpreter and the agent, not the probe's bytecode
        # (2.3 KB on the 32-bit build): a board runs a frozen main, not a script in RAM.
        # The probe's own part: its live heap at its first line less a one-line script's.
        bare = subprocess.run(exe + ["-X", "heapsize=" + size, "-c",
                                     "import gc;gc.collect();print(gc.mem_alloc())"],
                              env=env, capture_output=True, text=True, timeout=60)
        r["probe_code"] = r["script"] - int(bare.stdout)
        for figures in (r, r["stages"]):
            for k in ("peak_live", "imported", "wired", "connected"):
                if k in figures:
                    figures[k] -= r["probe_code"]
    if r is None:
        why = lines[-1] if lines else "exit %d" % out.returncode  # e.g. MemoryError
    elif r["connects"] != 1:
        why = "%d MQTT connections" % r["connects"]
    elif r["final_cap_w"] != r["expected_cap_w"]:
        why = "last cap %d W, not %d W" % (r["final_cap_w"], r["expected_cap_w"])
    else:
        why = "passed"
    if log is not None:
        log.append((size, why))
    return r if why == "passed" else None


def heap(build, broker, hours, search_hours, log):
    """The long session at 256K, and the smallest -X heapsize (KB) that passes shorter ones."""
    full = session(build, broker, "256K", hours, log)
    lo, hi = 0, len(HEAP_SIZES) - 1
    while lo < hi:  # smallest passing size, by bisection
        mid = (lo + hi) // 2
        if session(build, broker, "%dK" % HEAP_SIZES[mid], search_hours, log):
            hi = mid
        else:
            lo = mid + 1
    smallest = (HEAP_SIZES[lo] if session(build, broker, "%dK" % HEAP_SIZES[lo], search_hours,
                                          log) else None)
    return full, smallest


def memory(broker, hours, search_hours):
    """{build: figures} for MEMORY_BUILDS, or {build: {"skipped": why}}."""
    out = {}
    for build, what, _, _ in MEMORY_BUILDS:
        if build != "wheel":
            try:
                unix32.build()
            except (unix32.Unavailable, unix32.BuildError) as e:
                out[build] = {"skipped": str(e)}
                continue
        print("bench: heap and allocations, %s (%g h session, size search) ..." % (what, hours),
              flush=True)
        alloc = probe(build, "alloc_probe.py", "-", "5000", heapsize="256K")
        imports = probe(build, "import_probe.py", *module_names())
        log = []  # every heap session: (size, "passed" or why not)
        full, smallest = heap(build, broker, hours, search_hours, log)
        out[build] = {"alloc": alloc, "imports": imports, "heap": full,
                      "smallest_heap_k": smallest, "sessions": log}
        if build == TARGET_HEAP[0]:
            out[build]["at_target"] = session(build, broker, TARGET_HEAP[1], hours, log)
    return out


def memory_rows(mem, hours, search_hours):
    rows = []
    for build, what, live_vs, smallest_vs in MEMORY_BUILDS:
        m = mem[build]
        if "skipped" in m:
            rows.append(("heap and allocations, %s" % what, "skipped: " + m["skipped"], ""))
            continue
        full, smallest = m["heap"], m["smallest_heap_k"]
        steady = [r for r in m["alloc"] if r["state"] != "calibration"] if m["alloc"] else []
        top = sorted(m["imports"] or [], key=lambda r: -r[1])[:3]
        rows += [
            ("heap, %s: importing the agent" % what,
             "%.1f KB (largest: %s)" % (sum(r[1] for r in m["imports"]) / 1024, ", ".join(
                 "%s %.1f" % ("+".join(r[2]), r[1] / 1024) for r in top))
             if m["imports"] else "FAILED", "modules and what they loaded, in KB"),
            ("heap, %s: live after imports / wiring / connect" % what,
             "%.1f / %.1f / %.1f KB" % tuple(full["stages"][k] / 1024 for k in (
                 "imported", "wired", "connected")) if full else "FAILED",
             "the code, the agent's objects, the MQTT session (not the probe's bytecode)"),
            ("heap, %s: peak live, %g h session" % (what, hours),
             "%.1f KB live after collect (%.1f KB sampled with garbage)" % (
                 full["peak_live"] / 1024, full["peak_alloc"] / 1024) if full else "FAILED",
             live_vs),
            ("heap, %s: smallest -X heapsize passing" % what,
             "%sK (%g h sessions)" % (smallest, search_hours) if smallest
             else "none up to %dK" % HEAP_SIZES[-1], smallest_vs),
        ] + ([("heap, %s: %g h session at -X heapsize=%s" % (what, hours, TARGET_HEAP[1]),
               "passes, %.1f KB live peak" % (m["at_target"]["peak_live"] / 1024)
               if m["at_target"] else "FAILED",
               "the target heap, no growth")] if "at_target" in m else []) + [
            ("allocations per control tick, %s" % what,
             "%g bytes (%d bytes over %d ticks in %d states)" % (
                 sum(r["bytes"] for r in steady) / (steady[0]["ticks"] * len(steady)),
                 sum(r["bytes"] for r in steady), steady[0]["ticks"], len(steady))
             if steady else "FAILED", "target 0"),
        ]
    return rows


def ocpp_memory(state_dir, seconds=25):
    """The OCPP uplink's heap (probes/ocpp_probe.py) through a session a central system
    drives: a daily profile of 24 periods, a ChargePointMaxProfile, every configuration
    key, a day's composite schedule, meter values every second."""
    from ocpp.v16 import call
    from tools.bench.csms import Csms
    csms = Csms(interval=10).start()
    try:
        exe, env = micropython("wheel")
        proc = subprocess.Popen(
            exe + ["-X", "heapsize=256K",
                   os.path.join(ROOT, "tools", "measure", "probes", "ocpp_probe.py"), csms.url,
                   state_dir, str(seconds)], env=env, stdout=subprocess.PIPE, text=True)
        csms.wait(lambda: csms.cp and csms.actions("BootNotification"), 30)
        csms.call(call.ChangeConfiguration(key="MeterValueSampleInterval", value="1"))
        day = {"chargingRateUnit": "A", "startSchedule": "2026-11-24T00:00:00Z",
               "chargingSchedulePeriod": [{"startPeriod": h * 3600, "limit": 6 + h}
                                          for h in range(24)]}
        for connector, purpose, pid, schedule in (
                (1, "TxDefaultProfile", 1, day),
                (0, "ChargePointMaxProfile", 2, {"chargingRateUnit": "W",
                                                 "chargingSchedulePeriod": [
                                                     {"startPeriod": 0, "limit": 7400}]})):
            profile = {"chargingProfileId": pid, "stackLevel": 0,
                       "chargingProfilePurpose": purpose, "chargingProfileKind": "Absolute",
                       "chargingSchedule": schedule}
            if pid == 1:
                profile.update(chargingProfileKind="Recurring", recurrencyKind="Daily")
            csms.call(call.SetChargingProfile(connector_id=connector,
                                              cs_charging_profiles=profile))
        csms.wait(lambda: csms.actions("StartTransaction"), 20)
        csms.call(call.GetConfiguration())
        csms.call(call.GetCompositeSchedule(connector_id=1, duration=86400))
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        csms.close()
    return json.loads(out.strip().splitlines()[-1])


OCPP_MODULES = ("ocpp_", "ws_client", "isotime")  # the OCPP uplink's modules, by name


def footprint():
    """(agent and board, of which the OCPP uplink, micropython-lib) bytes of .mpy in the
    ESP32 deploy tree."""
    libs = {os.path.splitext(e.target)[0] + ".mpy" for e in deploy_sources("esp32")
            if e.source.startswith(MPY_LIB)}
    ours = ocpp = theirs = 0
    with tempfile.TemporaryDirectory() as tmp:
        build_tree(tmp, "esp32", None, "xtensawin")
        lib = os.path.join(tmp, "lib")
        for f in glob.glob(os.path.join(lib, "**", "*.mpy"), recursive=True):
            size = os.path.getsize(f)
            if os.path.relpath(f, lib) in libs:
                theirs += size
            else:
                ours += size
                ocpp += size if os.path.basename(f).startswith(OCPP_MODULES) else 0
    return ours, ocpp, theirs


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    versions = {}
    for build in ("wheel", "unix32"):
        try:
            exe, env = micropython(build)
            versions[build] = subprocess.run(exe + ["-c", "import sys; print(sys.version)"],
                                             env=env, capture_output=True,
                                             text=True).stdout.strip()
        except OSError:  # unix32 not built
            versions[build] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "micropython": versions, "system": platform.platform()}


def main(argv=None):
    p = argparse.ArgumentParser(prog="make bench")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--hours", type=float, default=24, help="virtual hours of the heap session")
    p.add_argument("--search-hours", type=float, default=1,
                   help="virtual hours of each session in the heap-size search")
    p.add_argument("--out", default=os.path.join(BUILD, "bench.json"))
    a = p.parse_args(argv)
    if not 1 <= a.samples <= 250:
        p.error("--samples must be 1 to 250 (the live latencies step 0.1 A down from 32 A)")
    tmp = tempfile.mkdtemp(prefix="bench-")
    children.adopt(tmp, lambda: shutil.rmtree(tmp, ignore_errors=True))  # gone at exit
    sub = lambda name: os.makedirs(os.path.join(tmp, name)) or os.path.join(tmp, name)  # noqa
    # Mosquitto with TCP_NODELAY where installed: amqtt's own Nagle delays add ~40 ms to
    # every reply and would be measured instead of the agent.
    broker = Broker(Broker.preferred()).start()
    try:
        print("bench: broker round trip ...", flush=True)
        rtt = broker_round_trip(broker, a.samples)
        print("bench: live latencies ...", flush=True)
        cap_ms, limit_ms, ack_ms, done_ms = live_latencies(broker, a.samples, sub("live"))
        print("bench: the live page's cost to the bench tick ...", flush=True)
        no_page, with_page, pushes = page_cost(broker, sub("page"))
        print("bench: limit expiry ...", flush=True)
        expiry = expiry_accuracy(20, sub("expiry"))
        print("bench: flash wear (NVS model) ...", flush=True)
        wear_rows = wear.table()
        print("bench: contactor opening ...", flush=True)
        unplug, c_to_b, mp_speed = open_latencies(2 * a.samples, sub("open"))
        print("bench: flash writes ...", flush=True)
        writes, changes = flash_writes(1000, sub("flash"))
        mem = memory(broker, a.hours, a.search_hours)
        print("bench: OCPP uplink heap ...", flush=True)
        ocpp = ocpp_memory(sub("ocpp"))
        print("bench: the cloud service (one replica, SQLite) ...", flush=True)
        cloud_rows, cloud_raw = cloud.run(broker, sub("cloud"), rtt)
    finally:
        broker.stop()
    cp_speed = cpython_speed(sub("cpython"))
    print("bench: a site day (3 chargers, %d bench minutes) ..." % (site_day.DAY_MS // 60000),
          flush=True)
    site, site_rows, _ = site_day.run(quiet=True)
    print("bench: the cloud at scale (tools/measure/fleet.py: 10,000 chargers, 1-3 replicas, "
          "failover; a few minutes) ...", flush=True)
    fleet_rows, fleet_raw = fleet.run(sub("fleet"))
    ours, ocpp_code, theirs = footprint()
    full = mem["wheel"]["heap"]
    steady = [r for r in mem["wheel"]["alloc"] if r["state"] != "calibration"]
    med = statistics.median
    rows = [
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
    ] + memory_rows(mem, a.hours, a.search_hours) + [
        ("control tick cost (unix port)", "%.1f us mean (worst state %.1f us)" % (
            sum(r["us_per_tick"] for r in steady) / len(steady),
            max(r["us_per_tick"] for r in steady)), "tick period 10 000 us"),
        ("flash writes per 1000 cap writes, 100 ms apart", "%d (%d real changes)"
         % (writes, changes), "target: at most the changes (the first 10 before their "
         "replies, then a burst: a raise once it has stood 5 s, so a flapping cap costs less)"),
        ("heap: OCPP uplink (64-bit wheel, .mpy in heap)",
         "+%.1f KB imported and built; agent with OCPP %.1f KB live, %.1f KB peak in a session"
         % (ocpp["ocpp_built"] / 1024, ocpp["peak_live"] / 1024, ocpp["peak_alloc"] / 1024),
         "the agent alone %.1f KB; an ESP32 heap starts at 56 KB (docs/ocpp.md: memory)"
         % (ocpp["agent"] / 1024)),
        ("flash footprint (.mpy of make deploy)", "%.1f KB agent and board (%.1f KB without "
         "the OCPP uplink's %.1f KB), %.1f KB micropython-lib" % (
             ours / 1024, (ours - ocpp_code) / 1024, ocpp_code / 1024, theirs / 1024),
         "target < 64 KB, set before OCPP (docs/performance.md); the v1.28.0 image freezes "
         "the same micropython-lib (imported first)"),
        ("simulation speed", "%.3g h/s micropython lockstep, %.3g h/s CPython in-process, "
         "%.3g h/s heap session" % (mp_speed, cp_speed,
                                    full["hours"] / full["wall_s"] if full else 0),
         "real time is 0.00028 h/s"),
        ("bench tick period, the live page open (make sim)",
         "%.2f ms p99, %.2f ms max (no page: %.2f ms p99, %.2f ms max)" % (
             pct(with_page, 99), max(with_page), pct(no_page, 99), max(no_page)),
         "10 ms ticks; %d pushes read; the page is an MQTT client in the launcher's "
         "process, never on the bench's lock" % pushes),
    ] + wear_rows + [("site: " + r[0], r[1], r[2] + ("" if r[3] else ": MISSED"))
                     for r in site_rows] + [
        (r[0], r[1], r[2] + ("" if r[3] else ": MISSED")) for r in cloud_rows] + fleet_rows
    info = machine()
    info["broker"] = broker.kind
    print("\nmachine: %s (%d cores), Python %s; micropython: wheel %s, unix32 %s; broker: %s"
          % (info["cpu"], info["cores"], info["python"], info["micropython"]["wheel"],
             info["micropython"]["unix32"], broker.kind))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print("| %s | %s | compare against |" % ("figure".ljust(w0), "measured".ljust(w1)))
    print("|%s|%s|---|" % ("-" * (w0 + 2), "-" * (w1 + 2)))
    for r in rows:
        print("| %s | %s | %s |" % (r[0].ljust(w0), r[1].ljust(w1), r[2]))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"machine": info, "rows": rows, "raw": {
            "rtt_ms": rtt, "cap_ms": cap_ms, "limit_ms": limit_ms, "expiry_ms": expiry,
            "ack_ms": ack_ms, "done_ms": done_ms,
            "unplug_ms": unplug, "c_to_b_ms": c_to_b, "memory": mem, "ocpp": ocpp,
            "flash_writes": writes, "flash_changes": changes,
            "footprint_bytes": {"agent_and_board": ours, "ocpp": ocpp_code,
                                "micropython_lib": theirs}, "site_day": site,
            "cloud": cloud_raw, "fleet": fleet_raw}}, f, indent=1)
    print("\nwritten to %s" % os.path.relpath(a.out, ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
