"""The live bench page of make sim (docs/bench.md, "The page"): one HTTP server on loopback.

It is one more MQTT client on the bench's broker, like evctl: it subscribes to each charger's
state, events, responses and availability and to its bench readings, keeps what a page needs
to draw at once (the latest of each, the recent events, the last minutes of samples), and
pushes every change to the open pages as server-sent events. A control on the page is a POST
that this server turns into an MQTT request with a requestId of its own, answered with the
charger's matching reply (or, for the bench topics, with the bench's next readings).
With a site (site.py), it also keeps the site bench's readings and drives its household and
meter, answered with the readings that show the change.

It never touches the bench or its lock: everything goes through the broker, so the real-time
loop next to it pays only for the CPU its threads use (make bench measures it).
"""
import collections
import itertools
import json
import os
import queue
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paho.mqtt.client as mqtt

from tools.bench.bench import (EV_FIELDS, FAULTS,  # (and the firmware's path)
                               ev_field_problem, meter_fault_problem)
from tools.bench.meter_peer import FAULTS as METER_FAULTS
from tools.bench.page import site as site_view
from tools.client import BENCH_ANSWER_S
from tools.json_input import loads
import topics  # the agent's topics, defined there
from topics import REQUESTS as AGENT_REQUESTS

DEFAULT_PORT = 8377
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/page.js": ("page.js", "text/javascript; charset=utf-8"),
         "/site.js": ("site.js", "text/javascript; charset=utf-8"),
         "/page.css": ("page.css", "text/css; charset=utf-8")}
# The browser itself refuses anything from elsewhere: the page works offline or not at all.
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
BENCH_REQUESTS = ("ev", "fault", "power", "meter")
UNITS = {"a": "A", "kw": "kW"}
REPLY_S = 10.0  # the agent answers in milliseconds; this is a charger that is not there
HISTORY_S = 600  # samples kept for a page that opens later (it shows up to 10 minutes)
EVENTS_KEPT = 50
BODY_MAX = 4096
CLIENT_BACKLOG = 2000  # pushes queued for one slow page before it is dropped (it reconnects)
KEEPALIVE_S = 15
SUBSCRIBE_S = 5  # a broker this slow still gets its page, only later


class Charger:
    """What the page shows of one charger: the latest of each topic, events, samples."""

    def __init__(self, device_id):
        self.id = device_id
        self.state = None  # the retained device read (data)
        self.readings = None
        self.readings_count = 0
        self.availability = None
        self.events = collections.deque(maxlen=EVENTS_KEPT)
        self.history = collections.deque()

    def snapshot(self):
        return {"state": self.state, "readings": self.readings,
                "availability": self.availability, "events": list(self.events),
                "history": list(self.history)}


def ceilings(state):
    """Every ceiling of a device read in A per phase (None where it does not apply).

    kW converts at the installation's voltage and phases, as the firmware does (which then
    rounds down to 0.1 A; the plot keeps 0.01 A)."""
    s = (state or {}).get("state") or {}
    settings = (state or {}).get("settings") or {}
    limits = s.get("limits") or {}
    value = lambda key: (settings.get(key) or {}).get("value")  # noqa: E731
    volts, phases = value("supply_voltage"), value("phases")

    def amps(limit):
        if not isinstance(limit, dict) or not _number(limit.get("value")):
            return None
        if limit.get("unit") == "a":
            return float(limit["value"])
        if limit.get("unit") == "kw" and _number(volts) and _number(phases) and volts * phases:
            return round(limit["value"] * 1000.0 / (volts * phases), 2)
        return None

    site = limits.get("site")
    return {"offered": s.get("offeredCurrent"),
            "cap": amps(limits.get("maxChargeRate")),
            "dynamic": amps(limits.get("dynamic")),
            "failsafe": amps(settings.get("failsafe_charge_rate")) if limits.get("failsafe")
            else None,
            "site": site.get("share") if isinstance(site, dict) else None,
            "maxCurrent": value("max_current")}


def _number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def describe(kind, reply):
    """One line for a person, from a charger's reply."""
    meta = reply.get("meta") or {}
    status = meta.get("status")
    if not reply.get("success"):
        err = reply.get("error") or {}
        return "%s %s: %s" % (status, err.get("code"), err.get("message"))
    data = reply.get("data") or {}
    if kind == "commands":
        return "%s %s: %s (%s)" % (status, data.get("command") or "command", data.get("state"),
                                   data.get("id"))
    text = "%s OK" % status
    if kind == "limit":
        limit = data.get("limit")
        text += (": %s %s until %s UTC" % (limit.get("value"), UNITS.get(limit.get("unit")),
                                           (data.get("expiresAt") or "")[11:19])
                 if isinstance(limit, dict) else ": cleared")
    if data.get("note"):
        text += "; " + data["note"]
    return text


def check_bench(name, body):
    """A bench message from a page, checked as bench.py would need it; an error text or None."""
    if name == "ev":
        if not body:
            return "no vehicle field given"
        for key, value in body.items():
            problem = ev_field_problem(key, value)
            if problem:
                return problem
    elif name == "fault":
        if set(body) != {"fault"} or body["fault"] not in FAULTS:
            return "fault must be one of %s" % ", ".join(FAULTS)
    elif name == "meter":
        if set(body) != {"meter", "fault"}:
            return "meter takes {\"meter\": \"ev\" | \"mains\", \"fault\": ...}"
        return meter_fault_problem(body["meter"], body["fault"])
    elif set(body) != {"on"} or type(body["on"]) is not bool:
        return "power takes {\"on\": true | false}"
    return None


class PageServer:
    def __init__(self, broker, devices, prefix=topics.PREFIX, port=None, site=None):
        """port None: DEFAULT_PORT, or a free one when that is taken (a second make sim).
        site: (site id, phases) of a site bench the chargers are behind, or None."""
        self.broker = broker
        self.prefix = prefix
        self.port = port
        self.chargers = {d: Charger(d) for d in devices}
        self.site = site_view.SiteView(*site, history_s=HISTORY_S) if site else None
        self.lock = threading.Condition()  # this server's own; never the bench's
        self.clients = set()
        self.pending = {}
        self._unacked = None  # subscriptions the broker has not acknowledged yet
        self._ids = ("page-%s-%%d" % os.urandom(4).hex(), itertools.count(1))
        self.files = {}
        self.http = None
        self.client = None

    @property
    def url(self):
        return "http://127.0.0.1:%d/" % self.port

    def start(self):
        for path, (name, kind) in FILES.items():
            with open(os.path.join(STATIC, name), "rb") as f:
                self.files[path] = (f.read(), kind)
        for port in ([DEFAULT_PORT, 0] if self.port is None else [self.port]):
            try:
                self.http = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
                break
            except OSError as e:
                if self.port is not None:
                    raise OSError("cannot serve the page on 127.0.0.1:%d (%s): choose "
                                  "another with --page-port N" % (port, e.strerror or e))
        self.http.daemon_threads = True
        self.http.page = self
        self.port = self.http.server_address[1]
        host, _, port = self.broker.rpartition(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="page-" + os.urandom(4).hex())
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect(host, int(port), keepalive=30)
        self.client.loop_start()
        threading.Thread(target=self.http.serve_forever, name="bench-page", daemon=True).start()
        with self.lock:  # subscribed before the agent boots: its boot's events are shown
            self.lock.wait_for(lambda: self._unacked == set(), SUBSCRIBE_S)
        return self

    def stop(self):
        if self.http:
            self.http.shutdown()
            self.http.server_close()
        with self.lock:
            for q in self.clients:
                _offer(q, None)  # ends each page's stream
            self.clients.clear()
        if self.client:
            self.client.disconnect()
            self.client.loop_stop()

    # -- MQTT side (paho's thread)
    def _on_connect(self, client, userdata, flags, reason, props):
        sock = client.socket()
        if sock is not None:  # a request goes out at once, not behind a delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mids = set()
        for d in self.chargers:
            base = topics.base(self.prefix, d)
            for name in (topics.STATE, topics.EVENTS, topics.RESPONSES, topics.AVAILABILITY):
                mids.add(client.subscribe(base + name, qos=1)[1])
            mids.add(client.subscribe("bench/%s/readings" % d)[1])
        if self.site:
            mids.add(client.subscribe(self.site.topic("readings"))[1])
        with self.lock:
            self._unacked = mids

    def _on_subscribe(self, client, userdata, mid, reasons, props):
        with self.lock:
            self._unacked.discard(mid)
            self.lock.notify_all()

    def _on_message(self, client, userdata, msg):
        if self.site and msg.topic == self.site.topic("readings"):
            return self._on_site(msg.payload)
        device, kind = self._route(msg.topic)
        if device is None:
            return
        text = msg.payload.decode(errors="replace")
        if kind == topics.AVAILABILITY:
            body = text
        else:
            try:
                body = loads(text)
            except ValueError:
                return
            if not isinstance(body, dict):
                return
        c = self.chargers[device]
        push = {"type": kind, "device": device}
        with self.lock:
            if kind == topics.RESPONSES:
                slot = self.pending.get((body.get("meta") or {}).get("requestId"))
                if slot is not None:
                    slot.append(body)
                    self.lock.notify_all()
                return
            if kind == topics.AVAILABILITY:
                c.availability = push["body"] = body
            elif kind == topics.STATE:
                c.state = push["body"] = body.get("data")
            elif kind == topics.EVENTS:
                if any(e.get("id") == body.get("id") for e in c.events):
                    return  # at-least-once delivery: a resend after a power cut
                c.events.append(body)
                push["body"] = body
            elif kind == "readings":
                c.readings = push["body"] = body
                c.readings_count += 1
                push["sample"] = self._sample(c)
                self.lock.notify_all()
            self._broadcast(push)

    def _on_site(self, payload):
        try:
            body = loads(payload)
        except ValueError:
            return
        with self.lock:
            sample = self.site.take(body) if isinstance(body, dict) else None
            if sample is None:
                return  # not the site bench's readings: nothing to draw
            self.lock.notify_all()
            self._broadcast({"type": "site", "body": body, "sample": sample})

    def _route(self, topic):
        parts = topic.split("/")
        if len(parts) == 3 and parts[0] == "bench" and parts[2] == "readings":
            return (parts[1], "readings") if parts[1] in self.chargers else (None, None)
        head, _, kind = topic.rpartition("/")
        prefix, _, device = head.rpartition("/")
        if prefix == self.prefix and device in self.chargers:
            return device, kind
        return None, None

    def _sample(self, c):
        """One point of the plot: the bench's measurement against the agent's ceilings."""
        r = c.readings
        now = int(time.time() * 1000)
        on = c.availability == "online" and r.get("power_on") is not False
        sample = ceilings(c.state)
        if not on:  # its last state is stale: nothing offers or limits while it is off
            sample.update(offered=None, cap=None, dynamic=None, failsafe=None, site=None)
        sample.update(t=now, current=r.get("current"), power=r.get("power"), on=on)
        c.history.append(sample)
        while c.history and c.history[0]["t"] < now - HISTORY_S * 1000:
            c.history.popleft()
        return sample

    def _broadcast(self, push):
        data = _event(push)
        for q in list(self.clients):
            if not _offer(q, data):
                self.clients.discard(q)  # too slow: it reconnects and starts afresh

    # -- the page's requests (HTTP handler threads)
    def hello(self):
        """Everything a page that just opened draws, and its queue for what follows."""
        q = queue.Queue(CLIENT_BACKLOG)
        with self.lock:
            _offer(q, _event({
                "type": "hello", "now": int(time.time() * 1000), "broker": self.broker,
                "prefix": self.prefix, "devices": list(self.chargers),
                "faults": list(FAULTS), "evFields": list(EV_FIELDS),
                "meterFaults": list(METER_FAULTS),
                "chargers": {d: c.snapshot() for d, c in self.chargers.items()},
                "site": self.site.snapshot() if self.site else None}))
            self.clients.add(q)
        return q

    def forget(self, q):
        with self.lock:
            self.clients.discard(q)

    def request(self, device, kind, body):
        """A page's request; the answer the page shows: {ok, message, reply?}."""
        c = self.chargers.get(device)
        if c is None:
            return {"ok": False, "message": "unknown charger %r" % device}
        if kind in BENCH_REQUESTS:
            return self._bench(c, kind, body)
        if c.availability != "online":
            return {"ok": False, "message": "%s is %s: %s" % (
                device, c.availability or "not seen yet",
                "power it on first" if c.availability == "offline" else "wait for it")}
        rid = self._ids[0] % next(self._ids[1])
        slot = []
        with self.lock:
            self.pending[rid] = slot
        try:
            self.client.publish("%s/%s/%s" % (self.prefix, device, kind),
                                json.dumps(dict(body, requestId=rid)), qos=1)
            with self.lock:
                if not self.lock.wait_for(lambda: slot, REPLY_S):
                    return {"ok": False, "message": "%s did not answer within %g s"
                            % (device, REPLY_S)}
        finally:
            with self.lock:
                self.pending.pop(rid, None)
        reply = slot[0]
        return {"ok": bool(reply.get("success")), "message": describe(kind, reply),
                "reply": reply}

    def site_request(self, name, body):
        """A page's household or meter control; the answer shows what the next readings say."""
        if self.site is None:
            return {"ok": False, "message": "no site on this bench (make sim --site-fuse A)"}
        error = site_view.check(self.site, name, body)
        if error:
            return {"ok": False, "message": error}
        took = site_view.took(name, body)
        self.client.publish(self.site.topic(name), json.dumps(body), qos=1)
        with self.lock:
            # The readings already on their way may predate the change: wait for one that
            # shows it, so an answer is never a guess.
            if not self.lock.wait_for(lambda: self.site.readings and took(self.site.readings),
                                      site_view.ANSWER_S):
                return {"ok": False, "message": "the site bench %s did not take it within "
                        "%g s" % (self.site.id, site_view.ANSWER_S)}
            readings = self.site.readings
        return {"ok": True, "message": site_view.describe(name, readings),
                "readings": readings}

    def _bench(self, c, name, body):
        error = check_bench(name, body)
        if error:
            return {"ok": False, "message": error}
        with self.lock:
            before = c.readings_count
        self.client.publish("bench/%s/%s" % (c.id, name), json.dumps(body), qos=1)
        with self.lock:
            if not self.lock.wait_for(lambda: c.readings_count > before and (
                    name != "meter" or _meter_took(c.readings, body)), BENCH_ANSWER_S):
                return {"ok": False, "message": "no bench answered for %s" % c.id}
            if name == "meter" and body["meter"] not in c.readings.get("meters", {}):
                return {"ok": False, "message": "the bench of %s has no %s meter (make sim "
                        "--%s-meter MODEL)" % (c.id, body["meter"], body["meter"])}
        return {"ok": True, "message": "bench: %s %s" % (name, " ".join(
            "%s=%s" % (k, json.dumps(v)) for k, v in body.items()))}


def _meter_took(readings, body):
    # Readings that show a meter's fault as asked, or show the bench has no such meter.
    m = (readings.get("meters") or {}).get(body["meter"])
    return m is None or m["fault"] == body["fault"]


def _event(push):
    return ("data: %s\n\n" % json.dumps(push, separators=(",", ":"))).encode()


def _offer(q, item):
    try:
        q.put_nowait(item)
        return True
    except queue.Full:
        return False


class _Handler(BaseHTTPRequestHandler):
    server_version = "bench-page"

    def log_message(self, *args):
        pass  # make sim's terminal is for the bench, not an access log

    @property
    def page(self):
        return self.server.page

    def _local(self):
        # Another site open in the same browser must not drive the bench, nor reach it by a
        # name that resolves to 127.0.0.1 (DNS rebinding): only our own host names.
        port = self.page.port
        hosts = {"127.0.0.1:%d" % port, "localhost:%d" % port}
        origin = self.headers.get("Origin")
        return (self.headers.get("Host") in hosts
                and (origin is None or origin[len("http://"):] in hosts))

    def _send(self, code, body, kind, extra=()):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code, obj):
        self._send(code, json.dumps(obj).encode(), "application/json")

    def do_GET(self):
        if not self._local():
            return self._json(403, {"ok": False, "message": "not a local page"})
        path = self.path.split("?", 1)[0]
        if path == "/events":
            return self._stream()
        if path in self.page.files:
            return self._send(200, *self.page.files[path])
        self._json(404, {"ok": False, "message": "no such page"})

    def do_POST(self):
        if not self._local():
            return self._json(403, {"ok": False, "message": "not a local page"})
        parts = self.path.split("/")  # /api/{device}/{kind} or /api/site/{household|meter}
        site = len(parts) == 4 and parts[2] == "site" and parts[3] in site_view.SITE_REQUESTS
        if len(parts) != 4 or parts[1] != "api" or not (
                site or parts[3] in AGENT_REQUESTS + BENCH_REQUESTS):
            return self._json(404, {"ok": False, "message": "no such request"})
        # JSON only: a form another site posts cannot have this type without asking first.
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self._json(415, {"ok": False, "message": "send application/json"})
        try:
            size = int(self.headers.get("Content-Length", ""))
        except ValueError:
            size = -1
        if not 0 <= size <= BODY_MAX:
            return self._json(400, {"ok": False, "message": "a body of 0-%d bytes" % BODY_MAX})
        try:
            body = loads(self.rfile.read(size) or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return self._json(400, {"ok": False, "message": "the body must be a JSON object"})
        self._json(200, self.page.site_request(parts[3], body) if site
                   else self.page.request(parts[2], parts[3], body))

    def _stream(self):
        q = self.page.hello()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n")  # reconnect quickly after a restart
            while True:
                try:
                    data = q.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    if q not in self.page.clients:
                        return  # dropped for being slow; the browser reconnects
                    data = b": keepalive\n\n"  # also finds a page that went away
                if data is None:
                    return
                self.wfile.write(data)
                self.wfile.flush()
        except OSError:
            pass  # the page was closed
        finally:
            self.page.forget(q)
