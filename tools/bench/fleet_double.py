"""A light double of many chargers speaking mqtt.md, for the fleet bench (tools/measure/fleet.py)
and the scale tests: thousands per process, each its own MQTT connection.

Each double is what the cloud sees of a charger: one MQTT 3.1.1 client (its device id as the
client id, a clean session, the last will `availability: offline` retained) that subscribes
to its request topics, publishes `availability: online` and a retained state report on every
(re)connect and every heartbeat, and answers each request on `responses`: a read with its
device read, settings and the dynamic limit accepted, a command acknowledged (202) and
completed a moment later (`push.completed`, QoS 1). It judges nothing (no conflicts, no
ranges): the agent's rules are tested on the agent. Its bodies are the firmware's own: a
device read, a 202 action, a push.completed and the other replies are taken once from the
agent (tools/bench/rig.py's InProcessRig), with the double's id and the request's ids put in,
so the contract is defined once, by the firmware.

Given several brokers (a cluster's nodes), a double starts on its own "home" node and, when
the connection drops, tries the next after the agent's backoff (firmware/uplink.py: 0.5 s
doubling to 30 s, up to +50 % jitter): what the agent's broker list is to do.

All the clients of a process share one asyncio loop (paho's external-loop calls: no thread per
client). It prints one JSON line per second on stdout: how many are connected, ready
(subscribed), the requests answered, the events sent, the reconnections and how long each
took. It stops on SIGINT or SIGTERM, or when stdin closes (its parent gone), each double
saying `offline` first.

    python -m tools.bench.fleet_double --brokers H:P[,H:P...] --first 0 --count 2500
"""
import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time

import paho.mqtt.client as mqtt

from tools.cloud.contract import iso, new_id
from tools.paths import cpython_paths

cpython_paths()
import topics  # noqa: E402

TEMPLATE_ID = "template-charger"
BACKOFF_MIN_S = 0.5  # firmware/uplink.py's _BACKOFF_MIN_MS
BACKOFF_MAX_S = 30.0  # and _BACKOFF_MAX_MS
KEEPALIVE_S = 30  # the agent's default keepalive (firmware/uplink.py)


def templates():
    """The agent's own bodies, for TEMPLATE_ID: a state report, and the reply to each request
    kind (a read, a settings write, a command, a limit), and the command's push.completed."""
    from tools.bench.rig import InProcessRig
    with tempfile.TemporaryDirectory(prefix="fleet-template-") as d:
        rig = InProcessRig(d, device_id=TEMPLATE_ID)
        rig.run(2000)
        rig.ev(connected=True, request=True)
        rig.run(3000)
        out = {
            "read": rig.request("read", {"requestId": "r"}),
            "settings": rig.settings(max_charge_rate=7.4),
            "limit": rig.request("limit", {"requestId": "l", "limit": {"value": 10, "unit": "a"},
                                           "ttl": 60, "source": "bench"}),
            "commands": rig.command("charge", actionId="act_template"),
        }
        rig.run(1000)
        out["completed"] = rig.events("push.completed")[-1]
        out["state"] = rig.last_state()
    assert out["commands"]["meta"]["status"] == 202, out["commands"]
    out["state"]["data"]["lastAction"] = None  # no action of the template's in every state
    out["read"]["data"]["lastAction"] = None
    return out


def _swap(obj, old, new):
    """A copy of obj with `old` replaced by `new` in every string."""
    if isinstance(obj, dict):
        return {k: _swap(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_swap(v, old, new) for v in obj]
    if isinstance(obj, str) and old in obj:
        return obj.replace(old, new)
    return obj


class Double:
    """One simulated charger: its MQTT client and its answers."""

    def __init__(self, fleet, device_id, home):
        self.fleet = fleet
        self.id = device_id
        self.base = topics.base(fleet.prefix, device_id)
        self.at = home  # index into fleet.brokers
        self.seq = 0
        self.ready = False
        self.down_at = None  # time.monotonic() when the connection was lost
        self.delay_s = BACKOFF_MIN_S
        self.retry = None
        self.client = None

    def connect(self):
        """A new client (a new connection, as the agent makes one) to the broker in turn."""
        old, fleet = self.client, self.fleet
        if old is not None and old.socket() is not None:  # a connection given up half made
            sock = old.socket()
            fleet.loop.remove_reader(sock)
            fleet.loop.remove_writer(sock)
            sock.close()
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.id,
                                      clean_session=True)
        c.will_set(self.base + topics.AVAILABILITY, b"offline", qos=0, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_socket_open = fleet.socket_open
        c.on_socket_close = fleet.socket_close
        c.on_socket_register_write = fleet.register_write
        c.on_socket_unregister_write = fleet.unregister_write
        host, port = fleet.brokers[self.at]
        try:
            c.connect(host, port, KEEPALIVE_S)
        except OSError:
            self._lost()

    def _on_connect(self, client, userdata, flags, reason, props):
        if client is not self.client or reason.is_failure:
            return  # the broker closes the connection: _on_disconnect moves on
        client.subscribe([(self.base + k, 0) for k in topics.REQUESTS])
        client.publish(self.base + topics.AVAILABILITY, b"online", qos=0, retain=True)
        self.report()

    def _on_subscribe(self, client, userdata, mid, reasons, props):
        self.ready = True
        if self.down_at is not None:
            self.fleet.back_ms.append(round((time.monotonic() - self.down_at) * 1000))
            self.down_at = None
        self.delay_s = BACKOFF_MIN_S

    def _on_disconnect(self, client, userdata, flags, reason, props):
        if client is self.client:
            self._lost()

    def _lost(self):
        """The agent's way: the next broker, after a backoff with jitter."""
        if self.fleet.stopping or self.retry is not None:
            return
        if self.ready:  # it was up: how long it stays down is measured
            self.down_at = time.monotonic()
        self.ready = False
        self.fleet.reconnects += 1
        self.at = (self.at + 1) % len(self.fleet.brokers)
        wait_s = self.delay_s * (1 + random.random() * 0.5)
        self.delay_s = min(self.delay_s * 2, BACKOFF_MAX_S)
        self.retry = self.fleet.loop.call_later(wait_s, self._retry)

    def _retry(self):
        self.retry = None
        self.connect()

    def report(self):
        self.seq += 1
        body = self.fleet.body("state", self.id)
        body["meta"]["timestamp"] = iso(time.time())
        body["meta"]["seq"] = self.seq
        self.client.publish(self.base + topics.STATE, json.dumps(body, separators=(",", ":")),
                            qos=0, retain=True)

    def _on_message(self, client, userdata, msg):
        kind = msg.topic[len(self.base):]
        try:
            req = json.loads(msg.payload)
            rid = req.get("requestId")
        except (ValueError, AttributeError):
            return
        reply = self.fleet.body(kind, self.id)
        reply["meta"]["requestId"] = rid
        reply["meta"]["timestamp"] = iso(time.time())
        if kind == "commands":
            action_id = req.get("actionId") or new_id("act_")
            command = (req.get("action") or {}).get("command", "charge")
            reply["data"].update(id=action_id, command=command, createdAt=iso(time.time()),
                                 updatedAt=iso(time.time()))
            self.fleet.loop.call_later(self.fleet.complete_s, self._completed, action_id,
                                       command)
        client.publish(self.base + topics.RESPONSES, json.dumps(reply, separators=(",", ":")),
                       qos=0)
        self.fleet.answered += 1

    def _completed(self, action_id, command):
        evt = self.fleet.body("completed", self.id)
        evt["id"] = new_id("evt_")
        evt["timestamp"] = iso(time.time())
        evt["data"].update(actionId=action_id, command=command, completedAt=iso(time.time()))
        self.client.publish(self.base + topics.EVENTS, json.dumps(evt, separators=(",", ":")),
                            qos=1)
        self.fleet.events += 1


class Fleet:
    def __init__(self, brokers, ids, prefix=topics.PREFIX, heartbeat_s=60.0, complete_s=0.05):
        self.brokers = [(h, int(p)) for h, _, p in (b.rpartition(":") for b in brokers)]
        self.prefix = prefix
        self.heartbeat_s = heartbeat_s
        self.complete_s = complete_s
        self.t = templates()
        self.loop = None
        self.stopping = False
        self.answered = self.events = self.reconnects = 0
        self.back_ms = []  # how long each reconnection took, since the last stats line
        self.doubles = [Double(self, d, i % len(self.brokers)) for i, d in ids]

    def body(self, kind, device_id):
        """A fresh copy of the agent's body of `kind`, as charger `device_id`'s."""
        return _swap(self.t[kind], TEMPLATE_ID, device_id)

    # paho's external-loop hooks: its sockets in our asyncio loop
    def socket_open(self, client, userdata, sock):
        self.loop.add_reader(sock, client.loop_read)

    def socket_close(self, client, userdata, sock):
        self.loop.remove_reader(sock)

    def register_write(self, client, userdata, sock):
        self.loop.add_writer(sock, client.loop_write)

    def unregister_write(self, client, userdata, sock):
        self.loop.remove_writer(sock)

    async def run(self, stop):
        self.loop = asyncio.get_running_loop()
        for i, d in enumerate(self.doubles):
            d.connect()
            if i % 50 == 49:
                await asyncio.sleep(0)  # let the CONNACKs in as we go
        tasks = [asyncio.create_task(f()) for f in (self._misc, self._heartbeats, self._stats)]
        await stop.wait()
        self.stopping = True
        for t in tasks:
            t.cancel()
        for d in self.doubles:  # an orderly end: `offline` said, no retained `online` left
            d.client.publish(d.base + topics.AVAILABILITY, b"offline", qos=0, retain=True)
            d.client.disconnect()
        await asyncio.sleep(0.5)

    async def _misc(self):
        while True:
            await asyncio.sleep(1)
            for d in self.doubles:
                d.client.loop_misc()  # keepalive pings

    async def _heartbeats(self):
        n = len(self.doubles)
        while True:  # every double once per heartbeat, spread evenly over it
            for d in self.doubles:
                if d.ready:
                    d.report()
                await asyncio.sleep(self.heartbeat_s / n)

    async def _stats(self):
        while True:
            await asyncio.sleep(1)
            back, self.back_ms = self.back_ms, []
            print(json.dumps({"connected": sum(d.client.is_connected() for d in self.doubles),
                              "ready": sum(d.ready for d in self.doubles),
                              "answered": self.answered, "events": self.events,
                              "reconnects": self.reconnects, "back_ms": back}), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.bench.fleet_double",
                                description=__doc__.split("\n")[0])
    p.add_argument("--brokers", required=True, help="HOST:PORT[,HOST:PORT...]")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--id-format", default="fleet-%05d")
    p.add_argument("--prefix", default=topics.PREFIX)
    p.add_argument("--heartbeat", type=float, default=60.0, help="s between state reports")
    p.add_argument("--complete", type=float, default=0.05,
                   help="s from a command's 202 to its push.completed")
    a = p.parse_args(argv)
    ids = [(i, a.id_format % i) for i in range(a.first, a.first + a.count)]
    fleet = Fleet(a.brokers.split(","), ids, a.prefix, a.heartbeat, a.complete)

    async def go():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_reader(sys.stdin, lambda: sys.stdin.read(65536) or stop.set())
        await fleet.run(stop)
    asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(main())
