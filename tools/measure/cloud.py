"""make bench: the cloud service's figures, one replica on SQLite (docs/cloud.md, cloud.md's
"What works means"), each printed with its target.

- cached read: GET /ev-charger/{id} paced at 1,000 reads/s for a few seconds over keep-alive
  connections, open loop (each read's latency counts from when it was due, so a stall
  shows);
- live read (?expedite=true, the service started with an expedite TTL of 1 ms so every read
  asks the charger) against the same read asked over MQTT directly;
- command -> push.completed webhook received, against the charger's own command ->
  push.completed on the broker.
The charger is make sim's (the agent under micropython, in real time); the service runs as
its own process, as deployed. Usable alone: python -m tools.measure.cloud.
"""
import asyncio
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tools.bench import children
from tools.bench.broker import Broker, free_port
from tools.bench.sim import parse
from tools.bench.sim_charger import Sim
from tools.client import Charger
from tools.measure.latency import broker_round_trip, pct
from tools.paths import ROOT

KEY = "bench-key-0123456789abcdef"
RATE = 1000  # reads/s
READ_S = 5


def start_service(broker, db, *extra, port=None):
    """The service as its own process, as deployed: (process, port). `broker` is a Broker or
    an address list ("h1:p1,h2:p2"); its client id follows its port, so a replica started
    again on the same port resumes its broker session."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "tools.cloud", "serve", "--broker",
           getattr(broker, "address", broker), "--db", db, "--port", str(port), "--api-key", KEY,
           "--expedite-ttl", "0.001", "--client-id", "bench-cloud-%d" % port, *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children.adopt(proc, lambda: children.interrupt(proc))
    url = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if json.loads(urllib.request.urlopen(url + "/health", timeout=1).read())["data"][
                    "broker"]:
                return proc, port
        except (OSError, ValueError):
            time.sleep(0.1)
    raise RuntimeError("the cloud service did not start")


async def _paced_reads(port, path, rate, seconds, connections=8):
    """Latencies (ms) of GETs due every 1/rate s, over keep-alive connections."""
    request = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n"
               % (path, KEY)).encode()
    free = asyncio.Queue()
    for _ in range(connections):
        free.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    out, bad = [], []

    async def one(due):
        reader, writer = await free.get()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int([h for h in head.split(b"\r\n")
                          if h.lower().startswith(b"content-length")][0].split(b":")[1])
            body = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200") or b'"source":"cache"' not in body:
                bad.append(head[:40])
            out.append((time.perf_counter() - due) * 1000)
        finally:
            free.put_nowait((reader, writer))

    t0 = time.perf_counter() + 0.05
    tasks = []
    for i in range(int(rate * seconds)):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    while not free.empty():
        free.get_nowait()[1].close()
    return out, bad


class _Hooks(BaseHTTPRequestHandler):
    received = {}  # actionId -> perf_counter when received

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Hooks.received[body["data"].get("actionId")] = time.perf_counter()
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


class KeepAlive:
    """One keep-alive HTTP connection, as the MQTT client it is compared with keeps one;
    made again when the server has closed it (idle for its keep-alive time). Only for
    requests that may be sent twice (reads, commands with an actionId)."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def __call__(self, method, path, body=None):
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=json.dumps(body) if body else None,
                                  headers={"Authorization": "Bearer " + KEY})
                r = self.conn.getresponse()
                return r.status, json.loads(r.read())
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt == 2:
                    raise


def _http(port, method, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": "Bearer " + KEY})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def run(broker, state_dir, rtt_ms, n=100):
    """(rows, raw): rows are (figure, measured, target, met)."""
    sim = Sim(parse(["--broker", broker.address, "--state-dir", os.path.join(state_dir, "sim"),
                     "--device-id", "cloud-1", "--no-page"]))
    sim.start()
    threading.Thread(target=sim.run, daemon=True).start()
    c = Charger(broker.address, "cloud-1")
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    proc = None
    try:
        c.wait(lambda: c.availability == "online" and c.states, 20)
        proc, port = start_service(broker, os.path.join(state_dir, "cloud.db"))
        path = "/ev-charger/cloud-1"
        _http(port, "GET", path)  # the first read goes live (a retained report)
        cached, bad = asyncio.run(_paced_reads(port, path, RATE, READ_S))
        # The same read over MQTT, and through the service (every expedited read goes live).
        direct, live, inside = [], [], []
        client = KeepAlive(port)
        for _ in range(n):
            time.sleep(random.random() * 0.01)
            t0 = time.perf_counter()
            c.read()
            direct.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.005)  # the service took that reply too: let it age past the TTL
            t0 = time.perf_counter()
            status, body = client("GET", path + "?expedite=true")
            live.append((time.perf_counter() - t0) * 1000)
            inside.append(body["meta"]["latencyMs"])
            assert status == 200 and body["data"]["metadata"]["source"] == "live", body
        # Commands: a car charging, `charge` again and again completes at once.
        with sim.lock:
            sim.bench.set_ev({"connected": True, "request": True})
        c.wait(lambda: c.readings and c.readings["contactor"] == "closed", 15)
        _http(port, "POST", "/webhooks", {"url": "http://127.0.0.1:%d/h" % hooks.server_port,
                                          "events": ["push.completed"]})
        own, total = [], []
        for i in range(n):
            aid = "act_bench_%d_%d" % (os.getpid(), i)
            time.sleep(random.random() * 0.01)
            t0 = time.perf_counter()
            status, _ = client("POST", "/ev-charger/cloud-1",
                               {"action": {"command": "charge"}, "actionId": aid})
            assert status == 202
            c.wait(lambda: any(e["type"] == "push.completed" and e["data"]["actionId"] == aid
                               for e in c.events[-5:]), 10)
            own.append((time.perf_counter() - t0) * 1000)
            deadline = time.monotonic() + 10
            while aid not in _Hooks.received and time.monotonic() < deadline:
                time.sleep(0.001)
            total.append((_Hooks.received[aid] - t0) * 1000)
    finally:
        if proc:
            children.interrupt(proc)
        hooks.shutdown()
        c.close()
        sim.stop.set()
        time.sleep(0.1)
        with sim.lock:
            sim.shutdown()
    med = statistics.median
    rtt = med(rtt_ms)
    live_target = med(direct) + 2 * rtt  # 2x the request/reply's two hops, plus the answer
    hook_target = 1000 + pct(own, 99)
    rows = [
        ("cloud: cached read at %d reads/s (one replica, SQLite)" % RATE,
         "%.2f ms p50, %.2f ms p99 (%d reads%s)" % (med(cached), pct(cached, 99), len(cached),
                                                   ", %d not cache" % len(bad) if bad else ""),
         "target p99 <= 10 ms", pct(cached, 99) <= 10 and not bad),
        ("cloud: live read (?expedite=true, the charger asked)",
         "%.2f ms median (%.2f ms of it inside the service), %.2f ms p99; the same read "
         "over MQTT %.2f ms median" % (med(live), med(inside), pct(live, 99), med(direct)),
         "target <= %.2f ms: 2x the broker's request/reply (2 x %.2f ms hops) plus the "
         "charger's answer" % (live_target, rtt), med(live) <= live_target),
        ("cloud: command -> push.completed webhook received",
         "%.2f ms median, %.2f ms p99; the charger's own command -> event %.2f ms p99"
         % (med(total), pct(total, 99), pct(own, 99)),
         "target p99 <= %.0f ms (1 s plus the charger's own)" % hook_target,
         pct(total, 99) <= hook_target),
    ]
    return rows, {"cached_ms": cached, "live_ms": live, "live_inside_ms": inside,
                  "direct_read_ms": direct,
                  "webhook_ms": total, "own_event_ms": own}


def main():
    tmp = tempfile.mkdtemp(prefix="bench-cloud-")
    children.adopt(tmp, lambda: shutil.rmtree(tmp, ignore_errors=True))
    broker = Broker(Broker.preferred()).start()
    try:
        rows, _ = run(broker, tmp, broker_round_trip(broker, 200))
    finally:
        broker.stop()
    for r in rows:
        print("| %s | %s | %s%s |" % (r[0], r[1], r[2], "" if r[3] else ": MISSED"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
