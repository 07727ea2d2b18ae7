"""Helpers for the end-to-end tests: a broker, the make-sim launcher, an MQTT client, polling.
(The fixtures built on them, `broker` among them, are in conftest.py.)"""
import contextlib
import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from tools.bench import children
from tools.bench.broker import Broker
from tools.bench.poll import wait_for  # noqa: F401 (the tests take it from here)
from tools.paths import ROOT
from tools.client import Charger
from tools.bench.sim import parse
from tools.bench.sim_charger import Sim
import standardwebhooks
import svix.webhooks


def launch(broker, state_dir, *extra):
    """make sim's launcher as a subprocess (the way a user starts it)."""
    cmd = [sys.executable, "-m", "tools.bench.sim", "--broker", broker.address,
           "--state-dir", str(state_dir), *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    children.adopt(proc, lambda: children.interrupt(proc))  # even if the run is interrupted
    return proc


def stop(proc):
    proc.send_signal(signal.SIGINT)
    return exited(proc)


def exited(proc, timeout_s=20):
    """The launcher's exit code and output once it ends (by itself, or after stop's Ctrl-C)."""
    out, _ = proc.communicate(timeout=timeout_s)
    children.release(proc)
    return proc.returncode, out


@contextlib.contextmanager
def launched(broker, state_dir, *extra, device_id="charger-1"):
    """make sim's launcher (launch) on broker and a Charger client of device_id, online; at
    the end the client closes and Ctrl-C must stop the launcher cleanly."""
    proc = launch(broker, state_dir, "--device-id", device_id, *extra)
    c = Charger(broker.address, device_id)
    try:
        online(c)
        yield c
    finally:
        c.close()
        code, out = stop(proc)
        assert code == 0 and "sim: stopped" in out, out  # a clean exit on Ctrl-C


class InProcessSim:
    """The same launcher's Sim in a thread of this process, so a test can see the bench."""

    def __init__(self, argv, unix_base_ms=None, config=None):
        self.sim = Sim(parse(argv))
        if unix_base_ms is not None:  # the board's wall clock at bench time 0
            self.sim.unix_base_ms = unix_base_ms
        if config:  # installation settings the launcher has no option for (merged one deep)
            made = self.sim.config
            self.sim.config = lambda: _merge(made(), config)
        self.sim.start()
        self.thread = threading.Thread(target=self.sim.run, daemon=True)
        self.thread.start()

    @property
    def bench(self):
        return self.sim.bench

    def close(self):
        self.sim.stop.set()
        self.thread.join(5)
        if self.thread.is_alive() and self.sim.agent:
            # Stuck in a tick: the agent's control loop stopped answering. Cutting its
            # power ends the wait (the link closes), so a failed test cannot hang the run.
            self.sim.agent.proc.kill()
            self.thread.join(5)
        with self.sim.lock:
            self.sim.shutdown()


def _merge(cfg, extra):
    out = dict(cfg)
    for key, value in extra.items():
        out[key] = dict(out.get(key) or {}, **value) if isinstance(value, dict) else value
    return out


def online(charger, timeout=20):
    charger.wait(lambda: charger.availability == "online" and charger.states, timeout)


def reported_duty(charger):
    """The pilot's duty in percent in the bench's last readings over MQTT (None before
    any)."""
    return charger.readings and charger.readings["pilot"]["dutyPercent"]


BROKERS = ["amqtt", "mosquitto"]  # each broker make sim may start


def started(kind):
    """A started broker of this kind; the test skips where Mosquitto is not installed."""
    if kind == "mosquitto" and not Broker.mosquitto_available():
        pytest.skip("mosquitto is not installed here")
    return Broker(kind).start()


# The agent is configured with "whsec_" + this (Standard Webhooks' form of a secret).
WEBHOOK_SECRET = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class WebhookReceiver(BaseHTTPRequestHandler):
    """A webhook endpoint that verifies the way people's receivers do, with the
    `standardwebhooks` and the `svix` libraries (each must accept): a bad signature gets
    401; the first `fail_first` good attempts get 500 (the agent must retry), then 200.
    reset() before each test."""
    fail_first = 0
    attempts = []  # (webhook-id, signature good), every attempt
    accepted = []  # the events answered 200

    @classmethod
    def reset(cls, fail_first=0):
        cls.fail_first, cls.attempts, cls.accepted = fail_first, [], []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        h = {k.lower(): v for k, v in self.headers.items()}
        good = verified(body, h)
        cls = WebhookReceiver
        cls.attempts.append((h["webhook-id"], good))
        ok = good and len(cls.attempts) > cls.fail_first
        if ok:
            cls.accepted.append(json.loads(body))
        self.send_response(200 if ok else (500 if good else 401))
        self.end_headers()

    def log_message(self, *args):
        pass


def verified(body, headers, secret="whsec_" + WEBHOOK_SECRET):
    """True if both libraries accept the delivery (each raises its own error otherwise)."""
    try:
        standardwebhooks.Webhook(secret).verify(body, headers)
        svix.webhooks.Webhook(secret).verify(body, headers)
    except Exception:
        return False
    return True


class HttpApi:
    """The charger's HTTP front (docs/http.md) as a client calls it."""

    def __init__(self, port, token, device_id="charger-1"):
        self.port = port
        self.token = token
        self.path = "/ev-charger/" + device_id

    def call(self, method, path, body=None, token=True, headers=None, timeout=10):
        """(status, headers with lower-case names, the body as JSON) of one request; `body` a
        dict (sent as JSON) or bytes; token: True for the right one, else that text, or None."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + (self.token if token is True else token)
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            raw = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(raw)
        finally:
            conn.close()

    def read(self):
        status, _, body = self.call("GET", self.path)
        assert status == 200, body
        return body["data"]

    def raw(self, data, pause_s=0.0, timeout=10):
        """What the front answers to `data` (bytes, or a list of pieces sent `pause_s` apart),
        read until it closes: (status or None, the whole answer)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            try:
                for piece in (data if isinstance(data, list) else [data]):
                    s.sendall(piece)
                    time.sleep(pause_s)
            except OSError:  # it answered and closed before all was sent
                pass
            out = b""
            try:
                while True:
                    got = s.recv(4096)
                    if not got:
                        break
                    out += got
            except OSError:  # reset after its answer
                pass
        head = out.split(b"\r\n", 1)[0].split(b" ")
        return (int(head[1]) if len(head) > 1 and head[1].isdigit() else None), out
