"""The MQTT client of one charger's topics and its bench's: what evctl, the tests, make bench
and the bench page's server share (tools/evctl.py is the command line on top of it).

Charger connects, subscribes to the charger's responses, state, events and availability and to
its bench readings, and keeps what arrived; its methods publish requests (each answered by the
reply with its requestId) and bench messages. paho-mqtt's network thread calls back into it;
callers wait on its condition (Charger.wait).
"""
import itertools
import json
import os
import socket
import ssl
import threading

import paho.mqtt.client as mqtt

from tools.json_input import loads
from tools.paths import cpython_paths

cpython_paths()
import topics  # noqa: E402  (the firmware's: the charger's topics, defined once)
import trust  # noqa: E402  (the firmware's: the certificates a CA file holds)

BENCH_ANSWER_S = 1.5  # the bench publishes readings at once after a bench message


class Unreachable(Exception):
    """The broker or the charger cannot be reached (exit status 3)."""


def tls_context(ca_file):
    """A client TLS context that checks the broker against ca_file: PEM or DER, the
    certificates the agent takes from it (firmware/uplink/trust.py)."""
    with open(ca_file, "rb") as f:
        data = f.read()
    return ssl.create_default_context(cadata=b"".join(trust.certificates(data)))


class Charger:
    """An MQTT client for one charger's topics and its bench's (tests use it too)."""

    def __init__(self, broker, device_id="charger-1", prefix=topics.PREFIX, timeout=10.0,
                 ca=None, username=None, password=None):
        self.address = broker
        self.device_id = device_id
        self.base = topics.base(prefix, device_id)
        self.bench = "bench/%s/" % device_id
        self.cond = threading.Condition()
        self.replies = {}
        self.events = []
        self.states = []
        self.readings = None
        self.readings_count = 0
        self.availability = None
        self.on_message = None
        self.connected = False
        self._pending_subs = None
        # A fresh prefix per client: two evctl runs side by side never share a requestId.
        self._ids = ("cli-%s-%%d" % os.urandom(4).hex(), itertools.count(1))
        host, port = split_address(broker)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._message
        self.client.on_connect = self._subscribe
        self.client.on_subscribe = self._subscribed
        self.client.reconnect_delay_set(0.1, 0.5)
        if ca:
            self.client.tls_set_context(tls_context(ca))
        if username:
            self.client.username_pw_set(username, password)
        try:
            self.client.connect(host, port, keepalive=30)
        except (OSError, ValueError) as e:  # refused, unknown host, unreachable, timeout
            raise Unreachable("cannot reach the broker at %s (%s): is make sim running? "
                              "It prints the address" % (broker, _reason(e)))
        self.client.loop_start()
        try:
            self.wait(lambda: self.connected and not self._pending_subs, timeout)
        except TimeoutError:
            self.close()
            raise Unreachable("%s accepts connections but no MQTT broker answers there"
                              % broker)

    def _subscribe(self, client, userdata, flags, reason, props):
        # Requests go out at once: without TCP_NODELAY a request queued behind our own
        # PUBACK waits for the broker's delayed ACK (~40 ms), which make bench would measure.
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Again on every reconnect: a clean session forgets subscriptions. Brokers send a
        # subscription's retained messages before acknowledging the next one, so once every
        # SUBACK is in, a retained availability (if there is one) has arrived.
        mine = [self.base + t for t in (topics.RESPONSES, topics.STATE, topics.EVENTS,
                                        topics.AVAILABILITY)]
        mids = {client.subscribe(t, qos=1)[1] for t in mine}
        mids.add(client.subscribe(self.bench + "readings")[1])
        with self.cond:
            self._pending_subs = mids
            self.connected = True
            self.cond.notify_all()

    def _subscribed(self, client, userdata, mid, reasons, props):
        with self.cond:
            if self._pending_subs:
                self._pending_subs.discard(mid)
            self.cond.notify_all()

    def _message(self, client, userdata, msg):
        text = msg.payload.decode(errors="replace")
        topic = msg.topic
        with self.cond:
            if topic == self.base + topics.AVAILABILITY:
                self.availability = text
            else:
                try:
                    body = loads(text)
                except ValueError:
                    body = text
                if topic == self.base + topics.RESPONSES and isinstance(body, dict):
                    self.replies.setdefault(body.get("meta", {}).get("requestId"), []).append(body)
                elif topic == self.base + topics.STATE:
                    self.states.append(body)
                elif topic == self.base + topics.EVENTS:
                    self.events.append(body)
                elif topic == self.bench + "readings":
                    self.readings = body
                    self.readings_count += 1
            self.cond.notify_all()
        if self.on_message:
            self.on_message(topic, text)

    def wait(self, predicate, timeout=10.0):
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise TimeoutError("condition not met within %.1f s" % timeout)

    def request(self, kind, body, timeout=10.0):
        rid = body.get("requestId") or self._ids[0] % next(self._ids[1])
        body = dict(body, requestId=rid)
        self.client.publish(self.base + kind, json.dumps(body), qos=1)
        self.wait(lambda: rid in self.replies, timeout)
        return self.replies[rid][0]

    def publish_raw(self, kind, payload):
        self.client.publish(self.base + kind, payload, qos=1)

    def read(self):
        return self.request("read", {})["data"]

    def cap(self, kw):
        return self.request("settings", {"settings": {"max_charge_rate": {"value": kw,
                                                                          "unit": "kw"}}})

    def command(self, name, **extra):
        body = {"action": {"command": name}}
        body.update(extra)
        return self.request("commands", body)

    def _bench(self, name, body):
        # QoS 1 and wait for the broker's PUBACK: the message is the broker's before we leave.
        info = self.client.publish(self.bench + name, json.dumps(body), qos=1)
        info.wait_for_publish(5)

    def ev(self, **fields):
        self._bench("ev", fields)

    def fault(self, name):
        self._bench("fault", {"fault": name})

    def power(self, on):
        self._bench("power", {"on": on})

    def meter(self, role, fault):
        self._bench("meter", {"meter": role, "fault": fault})

    def close(self):
        # Disconnect first: loop_stop() before it leaves the DISCONNECT to a timeout (~1 s).
        self.client.disconnect()
        self.client.loop_stop()


def split_address(text):
    host, sep, port = (text or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("%r is not HOST:PORT" % text)
    return host, int(port)


def _reason(e):
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, socket.gaierror):
        return "unknown host"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "no answer"
    return getattr(e, "strerror", None) or str(e)
