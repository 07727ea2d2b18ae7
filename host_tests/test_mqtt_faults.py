"""The network misbehaving: broker restarts, a broker that never answers, hostile payloads,
and a webhook receiver that fails first. The agent runs under micropython throughout."""
import json
import random
import socket
import threading
import time
from http.server import HTTPServer

import pytest

from e2e import WEBHOOK_SECRET, Charger, InProcessSim, online, wait_for
from e2e import WebhookReceiver as Receiver
from tools.bench.gate import Gate


pytestmark = pytest.mark.brokers("amqtt")


def make_sim(broker, tmp_path, *extra):
    # extra: make sim options, among them the agent's build (conftest.agent_build)
    return InProcessSim(["--broker", broker.address, "--state-dir", str(tmp_path / "flash"),
                         "--device-id", "f-1", *extra])


def bench_set(sim, **ev):
    with sim.sim.lock:
        sim.bench.set_ev(ev)


def test_broker_restart_loses_nothing_and_the_cap_holds(broker, tmp_path, agent_build):
    # The agent reaches the broker through a gate, opened only once this test's own
    # client is back: otherwise a subscriber could miss what the agent republishes.
    gate = Gate(broker.port)
    sim = make_sim(broker, tmp_path, "--agent-broker", "127.0.0.1:%d" % gate.port, *agent_build)
    c = Charger(broker.address, "f-1")
    try:
        online(c)
        assert c.cap(3.68)["success"]
        bench_set(sim, connected=True, request=True)
        wait_for(lambda: sim.bench.contactor, 10)
        seq_before = c.states[-1]["meta"]["seq"]
        broker.stop()
        mark = len(sim.bench.duty_log)
        time.sleep(1)
        bench_set(sim, connected=False)  # a whole session while the broker is away
        time.sleep(1)
        bench_set(sim, connected=True, request=True)
        wait_for(lambda: sim.bench.contactor, 10)
        duties = [d for _, d in sim.bench.duty_log[mark:] if 0 < d < sim.bench.pwm_full]
        assert duties and max(duties) == 2666  # the cap held without the broker
        c.availability = None
        gate.open = False
        c.connected = False
        broker.start()
        c.wait(lambda: c.connected, 20)
        time.sleep(0.5)  # the subscriptions settle
        gate.open = True
        online(c, timeout=60)
        c.wait(lambda: [e["type"] for e in c.events].count("session.started") >= 2, 20)
        kinds = [e["type"] for e in c.events]
        assert kinds.count("session.ended") == 1, kinds
        c.wait(lambda: c.states[-1]["meta"]["seq"] > seq_before, 5)  # republished
        assert c.read()["state"]["status"] == "charging"
        ids = [e["id"] for e in c.events]
        assert len(ids) == len(set(ids))
    finally:
        c.close()
        sim.close()
        gate.close()


def test_silent_broker_never_delays_the_contactor(broker, tmp_path, agent_build):
    zombie = socket.socket()
    zombie.bind(("127.0.0.1", 0))
    zombie.listen(8)  # accepts TCP (the kernel does) and never says a word
    sim = make_sim(broker, tmp_path, "--agent-broker", "127.0.0.1:%d" % zombie.getsockname()[1],
                   *agent_build)
    try:
        latencies = []
        for _ in range(5):
            bench_set(sim, connected=True, request=True)
            wait_for(lambda: sim.bench.contactor and sim.bench.current > 1, 10)
            t0 = sim.bench.t
            bench_set(sim, connected=False)
            wait_for(lambda: not sim.bench.contactor, 5)
            latencies.append(sim.bench.contactor_log[-1][0] - t0)
        assert max(latencies) <= 100, latencies
    finally:
        sim.close()
        zombie.close()


def hostile_payloads(rnd, n):
    valid = {"requestId": "x", "settings": {"max_charge_rate": {"value": 7, "unit": "kw"}}}
    shapes = [
        lambda: bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 64))),
        lambda: json.dumps(valid).encode()[:rnd.randint(0, 40)],
        lambda: b"[" * rnd.randint(50, 2000),
        lambda: json.dumps({"requestId": "h", "pad": "x" * rnd.randint(2100, 20000)}).encode(),
        lambda: json.dumps(rnd.choice([None, 1, "s", [], [1, 2], 3.5, True])).encode(),
        lambda: json.dumps({"requestId": rnd.choice([None, 5, [], "r" * 300]),
                            "settings": {"max_charge_rate": {"value": rnd.choice(
                                ["7", None, True, -1, 51, 1e308, [], {}]),
                                "unit": "kw"}}}).encode(),
        lambda: json.dumps({"requestId": "h", "settings": {"max_charge_rate": {
            "value": 7, "unit": rnd.choice(["w", "", None, 5, "kwh"])}}}).encode(),
        lambda: json.dumps({"requestId": "h", "action": rnd.choice([
            None, 5, "charge", {"command": None}, {"command": "fly"},
            {"command": "charge", "parameters": [1]}, {"command": "idle", "start": 0},
            {"command": "idle", "execution": "later"}]),
            "onConflict": rnd.choice([None, "queue_after", 7])}).encode(),
        lambda: json.dumps({"requestId": "h", "unknown": 1, "settings": {}}).encode(),
        lambda: json.dumps({"requestId": "h", "action": {"command": "charge"},
                            "actionId": rnd.choice(["", "a" * 65, "bad id", 7])}).encode(),
        lambda: "\ud800\udfff".encode("utf-8", "surrogatepass") + b'{"requestId": 1}',
    ]
    for _ in range(n):
        yield rnd.choice(("commands", "settings", "read")), rnd.choice(shapes)()


def test_a_thousand_hostile_payloads(broker, tmp_path, agent_build):
    # At an ESP32's 56 KB heap (unix32) this found json.loads of b"[" * 2000 starving the
    # control thread of heap (a MemoryError stopped it); api_text.json_fault now refuses those.
    sim = make_sim(broker, tmp_path, *agent_build)
    c = Charger(broker.address, "f-1")
    try:
        online(c)
        before = c.read()
        sent = 0
        for n, (kind, payload) in enumerate(hostile_payloads(random.Random(5), 1000)):
            c.publish_raw(kind, payload)
            sent += 1 if payload else 0  # empty: how MQTT clears a retained message, ignored
            if n % 50 == 49:  # keep the broker's queue for the agent short
                c.wait(lambda: sum(len(v) for v in c.replies.values()) >= sent - 10, 30)
        c.wait(lambda: sum(len(v) for v in c.replies.values()) >= sent + 1, 60)
        time.sleep(0.5)  # no second reply to anything
        replies = [r for v in c.replies.values() for r in v]
        assert len(replies) == sent + 1  # one each (and the first read)
        assert all(r["success"] is False for r in replies[1:] if r["meta"]["requestId"] != "x")
        after = c.read()
        assert sim.sim.agent.proc.poll() is None  # still running
        t0 = sim.bench.t
        time.sleep(0.5)
        assert sim.bench.t > t0  # and its control loop still answers every tick
        assert after["settings"] == before["settings"] and after["lastAction"] is None
        assert after["state"]["status"] == before["state"]["status"]
    finally:
        c.close()
        sim.close()


def test_webhook_signed_and_retried(broker, tmp_path, agent_build):
    Receiver.reset(fail_first=2)
    http = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/hook" % http.server_address[1]
    sim = make_sim(broker, tmp_path, "--webhook-url", url,
                   "--webhook-secret", "whsec_" + WEBHOOK_SECRET, *agent_build)
    c = Charger(broker.address, "f-1")
    try:
        online(c)
        bench_set(sim, connected=True, request=True)
        wait_for(lambda: sim.bench.contactor, 10)
        action = c.command("idle", actionId="act_hook")["data"]
        wait_for(lambda: Receiver.accepted, 30)
        evt = Receiver.accepted[0]
        assert evt["type"] == "push.completed" and evt["data"]["actionId"] == action["id"]
        assert len(Receiver.attempts) == 3 and all(good for _, good in Receiver.attempts)
        assert len({i for i, _ in Receiver.attempts}) == 1  # the same id on every retry
        assert Receiver.attempts[0][0] == evt["id"]
    finally:
        c.close()
        sim.close()
        http.shutdown()


# Issue 10, items 9, 11, 12 and 13 over MQTT (the lockstep ones are in test_safety.py).

def terminal_events(c):
    out = {}
    for e in c.events:
        if e["type"] in ("push.completed", "push.failed", "action.cancelled"):
            out.setdefault(e["data"]["actionId"], set()).add(e["id"])
    return out


@pytest.mark.parametrize("clients", [1, 4])
def test_command_bursts_never_lose_a_terminal_event(broker, tmp_path, agent_build, clients):
    _command_bursts(broker, tmp_path, agent_build, clients)


def test_a_command_burst_on_a_short_heap_keeps_the_connection(broker, tmp_path, unix32):
    # Below the ESP32's 56K, a reply or state report meets a fragmented heap every run:
    # before they were built again after a collection, each MemoryError cost the uplink its
    # connection and the queued requests their replies (at 56K: now and then, in CI). The
    # heap was 34K until the layers, the HTTP front, the updater, the broker list and the
    # meters' code added 3-4 KB of live heap (make bench's heap rows); below that the
    # journal finds no 300 bytes now and then and refuses commands (500). 44K keeps the
    # burst 12K below the ESP32's heap. MQTT alone, as a board without an http block: the
    # full config's burst runs at 56K (test_command_bursts_never_lose_a_terminal_event).
    _command_bursts(broker, tmp_path, ["--build", "unix32", "--heapsize", "44K", "--no-http"],
                    4)


def _command_bursts(broker, tmp_path, agent_build, clients):
    sim = make_sim(broker, tmp_path, *agent_build)
    cs = [Charger(broker.address, "f-1") for _ in range(clients)]
    try:
        for c in cs:
            online(c)
        bench_set(sim, connected=True, request=True)
        wait_for(lambda: sim.bench.contactor, 10)
        sent = []

        def burst(c, k):
            for i in range(40):  # 50/s from each client
                rid = "b%d-%d" % (k, i)
                c.client.publish(c.base + "commands", json.dumps(
                    {"requestId": rid, "actionId": "act_%d_%d" % (k, i),
                     "action": {"command": ("idle", "charge")[i % 2]},
                     "onConflict": "cancel_and_replace"}))
                sent.append((c, rid))
                time.sleep(0.02)

        threads = [threading.Thread(target=burst, args=(c, k)) for k, c in enumerate(cs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for(lambda: all(rid in c.replies for c, rid in sent), 60)
        accepted = [c.replies[rid][0]["data"]["id"] for c, rid in sent
                    if c.replies[rid][0]["meta"]["status"] == 202]
        statuses = {c.replies[rid][0]["meta"]["status"] for c, rid in sent}
        assert accepted and statuses <= {202, 429}, statuses
        watcher = cs[0]
        wait_for(lambda: all(a in terminal_events(watcher) for a in accepted), 60)
        time.sleep(1)
        ends = terminal_events(watcher)
        assert all(len(ends[a]) == 1 for a in accepted), [a for a in accepted if len(ends[a]) > 1]
    finally:
        for c in cs:
            c.close()
        sim.close()


def test_a_failing_flash_keeps_the_uplink_up_and_answering(broker, tmp_path, agent_build):
    import os
    os.makedirs(str(tmp_path / "flash" / "cap.tmp"))  # every write of the cap fails
    sim = make_sim(broker, tmp_path, *agent_build)
    c = Charger(broker.address, "f-1")
    seen = []
    c.on_message = lambda topic, text: seen.append(text) if topic.endswith("availability") else 0
    try:
        online(c)
        bench_set(sim, connected=True, request=True)
        wait_for(lambda: sim.bench.contactor, 10)
        for kw in (3.68, 2.3, 1.0):
            reply = c.cap(kw)
            assert reply["meta"]["status"] == 500 and reply["error"]["code"] == "STORAGE_FAILED"
        wait_for(lambda: sim.bench.readings()["pilot"]["dutyPercent"] == 100.0, 5)  # 1 kW
        time.sleep(2)
        assert "offline" not in seen  # never dropped the connection
        read = c.read()
        assert read["state"]["storage"] == "failed"
        assert any(e["type"] == "storage.failed" for e in c.events)
    finally:
        c.close()
        sim.close()


def test_a_hung_webhook_receiver_does_not_hold_up_requests(broker, tmp_path, agent_build):
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)  # accepts and never answers
    url = "http://127.0.0.1:%d/hook" % hung.getsockname()[1]
    sim = make_sim(broker, tmp_path, "--webhook-url", url, "--webhook-secret", "s", *agent_build)
    c = Charger(broker.address, "f-1")
    try:
        online(c)
        bench_set(sim, connected=True, request=True)
        wait_for(lambda: sim.bench.contactor, 10)
        c.command("idle", actionId="act_h")
        wait_for(lambda: any(e["data"].get("actionId") == "act_h" for e in c.events), 10)
        time.sleep(0.5)  # the webhook thread is now stuck in its POST
        for _ in range(5):
            t0 = time.monotonic()
            assert c.read()["id"] == "f-1"
            assert time.monotonic() - t0 < 1.0
    finally:
        c.close()
        sim.close()
        hung.close()


def test_local_duties_go_on_without_a_broker(broker, tmp_path, agent_build):
    import record
    sim = make_sim(broker, tmp_path, "--default-kw", "11", *agent_build)
    c = Charger(broker.address, "f-1")
    flash = tmp_path / "flash"
    try:
        online(c)
        bench_set(sim, connected=True, request=True)
        wait_for(lambda: sim.bench.contactor, 10)
        assert c.cap(3.68)["success"]
        c.command("idle", actionId="act_o")
        wait_for(lambda: any(e["data"].get("actionId") == "act_o" for e in c.events), 10)
        assert record.unword((flash / "pause").read_bytes()) == 1
        c.close()
        broker.stop()
        time.sleep(0.5)
        bench_set(sim, connected=False)  # the pause ends with the session, broker or not
        wait_for(lambda: record.unword((flash / "pause").read_bytes()) == 0, 5)
        with sim.sim.lock:
            sim.sim.agent.factory_reset()  # the reset button, held
        wait_for(lambda: record.unword((flash / "cap").read_bytes()) == 11000, 5)
    finally:
        sim.close()
