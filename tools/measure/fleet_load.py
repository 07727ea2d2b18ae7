"""The fleet bench's load and its witnesses (tools/measure/fleet.py): raw keep-alive HTTP
clients (so that the load costs less than what it measures), closed-loop and paced cached
reads, the steady load of a failover run with every answer kept, the webhook receiver, what
was lost afterwards, and the broker's own round trips. Runs in the bench's process (the
closed-loop readers in processes of their own).
"""
import asyncio
import http.server
import json
import multiprocessing
import os
import random
import re
import socket
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

from tools.measure.cloud import KEY
from tools.measure.latency import pct
from tools.paths import cpython_paths

cpython_paths()
import topics  # noqa: E402  (the firmware's: a charger's topics, defined once)

CLOSED_S = 4  # each closed-loop read run
CLOSED_CONNECTIONS = 16  # per replica
# The steady load of a failover run: what it checks is that nothing is lost and nothing
# hangs, not throughput, so it stays well inside what the replicas serve on this shared
# machine (an open loop above that measures the queue, not the failover).
LOAD_READS_PER_S = 50
LOAD_COMMANDS_PER_S = 5
REQUEST_BOUND_S = 10.0  # longer than any documented wait (5 s write, 5 s connect): a hang
LATENCY = re.compile(rb'"latencyMs":([0-9.]+)')  # contract.Meta: the time inside the replica


# -- HTTP: raw keep-alive connections, so that the load costs less than what it measures
class Http:
    """One keep-alive HTTP/1.1 connection to one replica."""

    def __init__(self, port):
        self.port = port
        self.stream = None

    async def request(self, method, path, body=None):
        """(status, body bytes); OSError or asyncio.IncompleteReadError when the connection
        is refused or cut."""
        if self.stream is None:
            self.stream = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.stream
        data = json.dumps(body).encode() if body is not None else b""
        writer.write(("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                      % (method, path, KEY, len(data))).encode() + data)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for h in head.split(b"\r\n"):
                if h.lower().startswith(b"content-length"):
                    length = int(h.split(b":")[1])
            payload = await reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        return int(head[9:12]), payload

    def close(self):
        if self.stream is not None:
            self.stream[1].close()
            self.stream = None


def cpu_s(pid):
    """CPU seconds a process has used (user + system, /proc)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hammer(port, ids, seconds, connections, start_at):
    """Closed loop, in a process of its own: from `start_at` (time.time()), `connections`
    clients reading random chargers back to back for `seconds`. (latencies ms, reads not
    served from the cache)"""
    time.sleep(max(0.0, start_at - time.time()))

    async def go():
        out, bad = [], [0]
        stop_at = time.perf_counter() + seconds

        async def client():
            h = Http(port)
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                status, body = await h.request("GET", "/ev-charger/" + random.choice(ids))
                out.append((time.perf_counter() - t0) * 1000)
                if status != 200 or b'"source":"cache"' not in body:
                    bad[0] += 1
            h.close()
        await asyncio.gather(*(client() for _ in range(connections)))
        return out, bad[0]
    return asyncio.run(go())


def closed_loop(replicas, ids, seconds=CLOSED_S, connections=CLOSED_CONNECTIONS):
    """Each replica hammered by its own load process, all in the same window (the processes
    start first): ([(latencies, bad)], [CPU s each replica used in the window])."""
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3  # the load processes are up and have imported by then
    with ctx.Pool(len(replicas)) as pool:
        pending = pool.starmap_async(_hammer, [(r.port, ids, seconds, connections, start_at)
                                               for r in replicas])
        time.sleep(max(0.0, start_at - time.time()))
        before = [cpu_s(r.proc.pid) for r in replicas]
        time.sleep(seconds)
        used = [cpu_s(r.proc.pid) - b for r, b in zip(replicas, before)]
        return pending.get(), used


async def paced(ports, ids, rate, seconds, connections=8):
    """Open loop: a read due every 1/rate s, spread over the replicas; latency counts from
    when each was due. (latencies ms, not from the cache)"""
    free = asyncio.Queue()
    for i in range(connections * len(ports)):
        free.put_nowait(Http(ports[i % len(ports)]))
    out, bad = [], [0]

    async def one(due):
        h = await free.get()
        try:
            status, body = await h.request("GET", "/ev-charger/" + random.choice(ids))
            out.append((time.perf_counter() - due) * 1000)
            if status != 200 or b'"source":"cache"' not in body:
                bad[0] += 1
        finally:
            free.put_nowait(h)

    t0 = time.perf_counter() + 0.05
    tasks = []
    for i in range(int(rate * seconds)):
        due = t0 + i / rate
        if due > time.perf_counter():
            await asyncio.sleep(due - time.perf_counter())
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    while not free.empty():
        free.get_nowait().close()
    return out, bad[0]


class Hooks:
    """The webhook receiver: when each push.completed arrived, by action id, and every
    event id received (duplicates are at-least-once's right)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.done = {}  # actionId -> perf_counter of the first delivery
        self.ids = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                try:
                    evt = json.loads(self.rfile.read(int(self.headers["content-length"])))
                except ValueError:  # cut off: its sender was killed mid-request (the
                    self.close_connection = True  # failover run); another sends it again
                    return
                with outer.lock:
                    outer.ids.append(evt["id"])
                    outer.done.setdefault(evt["data"].get("actionId"), time.perf_counter())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hook" % self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self):
        self.http.shutdown()
        self.http.server_close()


def call(port, method, path, body=None, timeout=30):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + KEY})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def broker_rtt(pub_address, sub_address, n=100):
    """publish -> subscriber (ms), the publisher on one broker (node), the subscriber on
    another (or the same)."""
    got = threading.Event()
    clients = []
    for address, on_message in ((sub_address, lambda *a: got.set()), (pub_address, None)):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.on_message = on_message
        host, port = address.rsplit(":", 1)
        c.connect(host, int(port))
        c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.loop_start()
        clients.append(c)
    clients[0].subscribe("fleet/rtt")
    time.sleep(0.5)
    out = []
    for _ in range(n):
        got.clear()
        time.sleep(random.random() * 0.01)
        t0 = time.perf_counter()
        clients[1].publish("fleet/rtt", b"x")
        if got.wait(5):
            out.append((time.perf_counter() - t0) * 1000)
    for c in clients:
        c.loop_stop()
        c.disconnect()
    return out


def direct(address, device_id, kind, body, n):
    """The same request over MQTT, straight to the charger: request -> reply (ms)."""
    replies = {}
    got = threading.Event()

    def on_message(client, userdata, msg):
        replies[json.loads(msg.payload)["meta"]["requestId"]] = time.perf_counter()
        got.set()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_message = on_message
    host, port = address.rsplit(":", 1)
    c.connect(host, int(port))
    c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.subscribe(topics.base(None, device_id) + topics.RESPONSES)
    c.loop_start()
    time.sleep(0.5)
    out = []
    for i in range(n):
        rid = "direct-%d-%d" % (os.getpid(), i)
        got.clear()
        time.sleep(random.random() * 0.01)
        t0 = time.perf_counter()
        c.publish(topics.base(None, device_id) + kind, json.dumps(dict(body, requestId=rid)))
        deadline = time.monotonic() + 5
        while rid not in replies and time.monotonic() < deadline:
            got.wait(0.1)
            got.clear()
        if rid in replies:
            out.append((replies[rid] - t0) * 1000)
    c.loop_stop()
    c.disconnect()
    return out


class Load:
    """A steady load through every replica, as a load balancer spreads it: reads of random
    chargers and commands (each with its own actionId) at fixed rates, each request timed
    and its answer kept. A replica whose connection is refused or cut is left out until it
    answers /health again (the load balancer's health check)."""

    def __init__(self, replicas, ids, read_ids, reads_per_s=LOAD_READS_PER_S,
                 commands_per_s=LOAD_COMMANDS_PER_S, tag="load"):
        self.replicas, self.ids, self.read_ids = replicas, ids, read_ids
        self.rates = (reads_per_s, commands_per_s)
        self.tag = tag
        self.outcomes = []  # (kind, answer: status, "cut" or "hung", ms, ms inside, sent at s)
        self.t0 = time.perf_counter()
        self.acked = {}  # actionId -> perf_counter when the 202 came
        self.down = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.thread.join(REQUEST_BOUND_S + 5)

    async def _run(self):
        n = 0
        tasks = set()
        t0 = self.t0 = time.perf_counter()
        period = 1.0 / (self.rates[0] + self.rates[1])
        command_every = int(round((self.rates[0] + self.rates[1]) / self.rates[1]))
        health = asyncio.create_task(self._health())
        while not self.stopping.is_set():
            due = t0 + n * period
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            up = [r for r in self.replicas if r.port not in self.down] or self.replicas
            replica = up[n % len(up)]
            kind = "command" if n % command_every == 0 else "read"
            t = asyncio.create_task(self._one(replica, kind, n))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks, return_exceptions=True)
        health.cancel()

    async def _health(self):
        while True:
            await asyncio.sleep(0.5)
            for r in self.replicas:
                if r.port in self.down:
                    try:
                        status, _ = await asyncio.wait_for(Http(r.port).request(
                            "GET", "/health"), 1)
                        if status == 200:
                            self.down.discard(r.port)
                    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                        pass

    async def _one(self, replica, kind, n):
        device = random.choice(self.read_ids if kind == "read" else self.ids)
        h = Http(replica.port)
        t0 = time.perf_counter()
        inside = None
        try:
            if kind == "read":
                status, body = await asyncio.wait_for(h.request("GET", "/ev-charger/" + device),
                                                      REQUEST_BOUND_S)
            else:
                action_id = "act_%s_%d_%d" % (self.tag, os.getpid(), n)
                status, body = await asyncio.wait_for(h.request(
                    "POST", "/ev-charger/" + device, {"action": {"command": "charge"},
                                                      "actionId": action_id}), REQUEST_BOUND_S)
                if status == 202:
                    self.acked[action_id] = time.perf_counter()
            answer = status
            found = LATENCY.search(body)
            inside = float(found.group(1)) if found else None
        except asyncio.TimeoutError:
            answer = "hung"
        except (OSError, asyncio.IncompleteReadError):
            answer = "cut"
            self.down.add(replica.port)
        finally:
            h.close()
        self.outcomes.append((kind, answer, (time.perf_counter() - t0) * 1000, inside,
                              t0 - self.t0))

    def summary(self):
        """(answers counted, slowest ms as the client saw it, p99 ms inside the replicas)"""
        counts = {}
        for _, answer, _, _, _ in self.outcomes:
            counts[answer] = counts.get(answer, 0) + 1
        slowest = max((o[2] for o in self.outcomes), default=0)
        inside = [o[3] for o in self.outcomes if o[3] is not None]
        return counts, slowest, pct(inside, 99)


def lost(load, hooks, replicas, wait_s):
    """(actions acknowledged but missing or not completed in GET /actions, push.completed
    webhooks not received, duplicate deliveries), waiting up to wait_s for the stragglers."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(a not in hooks.done for a in load.acked):
        time.sleep(0.2)
    missing_hooks = [a for a in load.acked if a not in hooks.done]
    missing_actions = []
    for i, action_id in enumerate(load.acked):
        status, body = call(replicas[i % len(replicas)].port, "GET", "/actions/" + action_id)
        if status != 200 or body["data"]["state"] != "completed":
            missing_actions.append(action_id)
    with hooks.lock:
        duplicates = len(hooks.ids) - len(set(hooks.ids))
    return missing_actions, missing_hooks, duplicates


def describe(load, missing_actions, missing_hooks, duplicates):
    counts, slowest, inside = load.summary()
    answers = ", ".join("%s %d" % (k, v) for k, v in sorted(counts.items(), key=str))
    return ("%d requests (%s), slowest %.0f ms as sent, %.0f ms p99 inside the replicas; %d "
            "actions acknowledged: %d missing, %d webhooks missing, %d delivered twice" % (
                len(load.outcomes), answers, slowest, inside, len(load.acked),
                len(missing_actions), len(missing_hooks), duplicates))
