"""evctl: read and drive a charger (and its bench) over MQTT from a terminal.

  python -m tools.evctl --broker 127.0.0.1:PORT read
  python -m tools.evctl --broker ... cap 7.4            # write max_charge_rate (kW)
  python -m tools.evctl --broker ... charge | idle [--replace] [--action-id ID]
  python -m tools.evctl --broker ... watch              # state, events and bench readings
  python -m tools.evctl --broker ... ev connected=true request=true maxCurrent=16
  python -m tools.evctl --broker ... fault pilot_short | none
  python -m tools.evctl --broker ... power off | on
"""
import argparse
import itertools
import json
import socket
import sys
import threading
import time

import paho.mqtt.client as mqtt

_ids = itertools.count(1)


class Charger:
    """An MQTT client for one charger's topics and its bench's."""

    def __init__(self, broker, device_id="charger-1", prefix="ev-charger"):
        self.base = "%s/%s/" % (prefix, device_id)
        self.bench = "bench/%s/" % device_id
        self.cond = threading.Condition()
        self.replies = {}
        self.events = []
        self.states = []
        self.readings = None
        self.availability = None
        self.on_message = None
        host, _, port = broker.rpartition(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._message
        self.client.on_connect = self._subscribe
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect(host, int(port), keepalive=30)
        self.client.loop_start()
        self.wait(lambda: self.connected, 10)

    connected = False

    def _subscribe(self, client, userdata, flags, reason, props):
        # Requests go out at once: without TCP_NODELAY a request queued behind our own
        # PUBACK waits for the broker's delayed ACK (~40 ms), which make bench would measure.
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Again on every reconnect: a clean session forgets subscriptions.
        for t in ("responses", "state", "events", "availability"):
            client.subscribe(self.base + t, qos=1)
        client.subscribe(self.bench + "readings")
        with self.cond:
            self.connected = True
            self.cond.notify_all()

    def _message(self, client, userdata, msg):
        text = msg.payload.decode(errors="replace")
        with self.cond:
            topic = msg.topic
            if topic == self.base + "availability":
                self.availability = text
            else:
                try:
                    body = json.loads(text)
                except ValueError:
                    body = text
                if topic == self.base + "responses" and isinstance(body, dict):
                    self.replies.setdefault(body.get("meta", {}).get("requestId"), []).append(body)
                elif topic == self.base + "state":
                    self.states.append(body)
                elif topic == self.base + "events":
                    self.events.append(body)
                elif topic == self.bench + "readings":
                    self.readings = body
            self.cond.notify_all()
        if self.on_message:
            self.on_message(msg.topic, text)

    def wait(self, predicate, timeout=10.0):
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise TimeoutError("condition not met within %.1f s" % timeout)

    def request(self, kind, body, timeout=10.0):
        rid = body.get("requestId") or "cli-%d" % next(_ids)
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

    def ev(self, **fields):
        self.client.publish(self.bench + "ev", json.dumps(fields), qos=1)

    def fault(self, name):
        self.client.publish(self.bench + "fault", json.dumps({"fault": name}), qos=1)

    def power(self, on):
        self.client.publish(self.bench + "power", json.dumps({"on": on}), qos=1)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def _value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv=None):
    p = argparse.ArgumentParser(prog="evctl", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--broker", required=True, help="HOST:PORT (make sim prints it)")
    p.add_argument("--device-id", default="charger-1")
    p.add_argument("--prefix", default="ev-charger")
    p.add_argument("what", choices=("read", "cap", "charge", "idle", "watch", "ev", "fault",
                                    "power"))
    p.add_argument("args", nargs="*")
    p.add_argument("--replace", action="store_true", help="onConflict: cancel_and_replace")
    p.add_argument("--action-id")
    a = p.parse_args(argv)
    c = Charger(a.broker, a.device_id, a.prefix)
    out = lambda obj: print(json.dumps(obj, indent=2))  # noqa: E731
    try:
        if a.what == "read":
            out(c.request("read", {}))
        elif a.what == "cap":
            out(c.cap(float(a.args[0])))
        elif a.what in ("charge", "idle"):
            extra = {}
            if a.replace:
                extra["onConflict"] = "cancel_and_replace"
            if a.action_id:
                extra["actionId"] = a.action_id
            out(c.command(a.what, **extra))
        elif a.what == "ev":
            c.ev(**{k: _value(v) for k, v in (kv.split("=", 1) for kv in a.args)})
        elif a.what == "fault":
            c.fault(a.args[0] if a.args else "none")
        elif a.what == "power":
            c.power(a.args[0] == "on")
        elif a.what == "watch":
            c.on_message = lambda topic, text: print(topic, text, flush=True)
            while True:
                time.sleep(1)
        time.sleep(0.2)  # let a QoS 1 publish leave before disconnecting
    except KeyboardInterrupt:
        pass
    finally:
        c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
