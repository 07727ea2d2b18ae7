"""Helpers for the cloud service's tests (test_cloud_*.py): the service as a process, a quick
charger on a real broker, and a webhook receiver that verifies with the `standardwebhooks`
and `svix` libraries, as people's receivers do.

RigCharger is the agent's own firmware in this CPython process (tools/bench/rig.py's
InProcessRig, stepped in real time by a thread) behind a real MQTT connection: the replies,
states and events are the firmware's, only faster to start than micropython. It can be told
to stay silent, answer late, or drop off the broker. Tests that need the real interpreter
start make sim's launcher instead (test_cloud_walkthrough.py, test_cloud_e2e.py).
"""
import json
import os
import queue
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import paho.mqtt.client as mqtt
import standardwebhooks
import svix.webhooks

from tools.bench import children
from tools.bench.broker import free_port
from tools.bench.rig import InProcessRig
from tools.paths import ROOT

KEY = "test-key-0123456789abcdef"


class Cloud:
    """`python -m tools.cloud serve` as a subprocess on a free port, with KEY made."""

    START_S = 30  # from the command to a /health saying the broker is connected

    def __init__(self, broker, db, *extra, key=KEY):
        self.broker, self.db, self.extra, self.key = broker, str(db), extra, key
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = None
        self.log = str(db) + ".log"

    def start(self):
        cmd = [sys.executable, "-m", "tools.cloud", "serve", "--broker", self.broker.address,
               "--db", self.db, "--port", str(self.port), "--api-key", self.key,
               "--client-id", "cloud-test-%d" % self.port, *self.extra]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        children.adopt(self, self.stop)
        deadline = time.monotonic() + self.START_S
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=1).json()["data"]["broker"]:
                    return self
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the service did not start:\n" + self.output())
            time.sleep(0.1)

    def output(self):
        with open(self.log, errors="replace") as f:
            return f.read()[-4000:]

    def kill(self):
        """A crash: SIGKILL, no clean-up of any kind."""
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc:
            children.interrupt(self.proc)
        children.release(self)

    def client(self, key=None):
        return httpx.Client(base_url=self.url, timeout=30, headers={
            "Authorization": "Bearer " + (key or self.key)})


class RigCharger:
    """The firmware in-process behind an MQTT connection (see the module's doc)."""

    def __init__(self, broker, device_id, state_dir):
        self.device_id = device_id
        self.base = "ev-charger/%s/" % device_id
        self.silent = False  # requests go unanswered
        self.delay_s = 0.0  # replies wait this long
        self.requests = queue.Queue()
        self.later = []  # (due, kind, payload)
        self.stop = threading.Event()
        os.makedirs(state_dir, exist_ok=True)
        self.rig = InProcessRig(str(state_dir), device_id=device_id)
        self.rig.board.unix_base_ms = int(time.time() * 1000) - self.rig.bench.t
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rig-" + device_id)
        self.client.will_set(self.base + "availability", b"offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.requests.put(
            (m.topic.rsplit("/", 1)[1], m.payload))
        self.rig.on_publish = self._forward
        host, port = broker.address.rsplit(":", 1)
        self.connected = threading.Event()
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.connected.wait(10)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_connect(self, client, userdata, flags, reason, props):
        for kind in ("commands", "settings", "read", "limit"):
            client.subscribe(self.base + kind, qos=1)
        client.publish(self.base + "availability", b"online", qos=1, retain=True)
        self.rig.agent.report_again()
        self.connected.set()

    def _forward(self, topic, payload, retain):
        qos = 1 if topic.endswith("/events") else 0
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def _run(self):
        while not self.stop.is_set():
            t0 = time.monotonic()
            while True:
                try:
                    kind, payload = self.requests.get_nowait()
                except queue.Empty:
                    break
                if callable(payload):
                    payload(self.rig)
                elif not self.silent:
                    self.later.append((t0 + self.delay_s, kind, payload))
            for item in [i for i in self.later if i[0] <= t0]:
                self.later.remove(item)
                self.rig.loop.on_request(item[1], item[2])
            self.rig.run(20)  # two ticks of the firmware: published through _forward
            time.sleep(max(0.0, 0.02 - (time.monotonic() - t0)))

    def do(self, job):
        """job(rig) in the charger's own thread, between two steps."""
        self.requests.put((None, job))

    def plug(self, **ev):
        self.do(lambda rig: rig.bench.set_ev(dict({"connected": True, "request": True}, **ev)))

    def drop(self):
        """Off the broker the way a power cut looks to it: the will says offline."""
        self.stop.set()
        self.thread.join(5)
        self.client.socket().close()  # no DISCONNECT: the broker publishes the will
        self.client.loop_stop()

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()


def raw_client(broker, client_id):
    """A plain MQTT client on the broker (a hostile charger, a test's own eyes)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    host, port = broker.address.rsplit(":", 1)
    c.connect(host, int(port))
    c.loop_start()
    return c


class Receiver:
    """A webhook endpoint on loopback. Each POST is verified with standardwebhooks AND svix
    (the secret set by `secret`); `answers` is a list of statuses to give in turn (then 200),
    `hold` an Event the handler waits on before answering (a receiver that hangs)."""

    def __init__(self, secret=None):
        self.secret = secret
        self.answers = []
        self.hold = None
        self.attempts = []  # (headers dict, body bytes, verified by both libraries)
        self.times = []  # time.monotonic() of each attempt
        self.accepted = []  # the events answered 2xx, parsed
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                good = outer.verify(body, headers)
                with outer.lock:
                    outer.attempts.append((headers, body, good))
                    outer.times.append(time.monotonic())
                if outer.hold is not None:
                    outer.hold.wait(60)
                with outer.lock:
                    status = outer.answers.pop(0) if outer.answers else 200
                    if good and status < 300:
                        outer.accepted.append(json.loads(body))
                self.send_response(status if good else 401)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hook" % self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def verify(self, body, headers):
        """True if both libraries accept the delivery (each raises otherwise)."""
        if not self.secret:
            return False
        try:
            standardwebhooks.Webhook(self.secret).verify(body, headers)
            svix.webhooks.Webhook(self.secret).verify(body, headers)
        except Exception:  # each library's own verification error
            return False
        return True

    def close(self):
        if self.hold is not None:
            self.hold.set()
        self.http.shutdown()
        self.http.server_close()
