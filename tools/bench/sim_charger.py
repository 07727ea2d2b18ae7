"""make sim's simulated charger: one agent under micropython on the simulated board, the bench
around it (pilot, contactor, meter, RCD, vehicle) stepped in real time, and its bench topics
(docs/bench.md). The launchers (sim.py: one charger; site_bench.py: a site of them) build on
it. Its run() loop ticks the bench on the caller's thread; paho-mqtt's thread delivers the
bench messages; both take Sim.lock.
"""
import json
import os
import socket
import sys
import threading
import time

import paho.mqtt.client as mqtt

from tools.bench.agent_process import AgentProcess
from tools.bench.bench import Bench
from tools.bench.broker import Broker, free_port
from tools.bench.update_server import UpdateServer
from tools.client import tls_context
from tools.json_input import loads
from tools.paths import cpython_paths

cpython_paths()
import topics  # noqa: E402
from sim_board import Board  # noqa: E402
from sim_main import RESTART_EXIT  # noqa: E402

TICK_MS = Board.TICK_MS
READINGS_EVERY_MS = 1000
_UPLINKS = {"mqtt": ["mqtt"], "ocpp": ["ocpp"], "both": ["mqtt", "ocpp"],  # by --uplink
            "none": []}
HTTP_WAIT_S = 20  # for the agent's HTTP front to listen, after it is powered on


def run_paced(stop, step):
    """step() every TICK_MS of wall time until stop is set: the real-time loop of make sim."""
    next_at = time.monotonic()
    while not stop.is_set():
        step()
        next_at += TICK_MS / 1000
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.5:
            next_at = time.monotonic()  # fell far behind (a stall): do not race to catch up


class Sim:
    def __init__(self, args, meters=None):
        """meters: {role: model} of the board's Modbus meters (default: --ev-meter's)."""
        self.args = args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        if meters is None:
            meters = {"ev": args.ev_meter} if getattr(args, "ev_meter", None) else {}
        self.bench = Bench(voltage=args.voltage, phases=args.phases,
                           phase_switch=getattr(args, "phase_switch", False), meters=meters)
        self.broker = None
        self.client = None
        self.updates = None  # the download server of --updates DIR (update_server.py)
        self.agent = None
        self.power = True
        self.unix_base_ms = int(time.time() * 1000)
        self.bench_topic = "bench/%s/" % args.device_id
        # The agent's HTTP front on loopback (0: none, --no-http; none with no network)
        self.http_port = free_port() if args.http_port is None else args.http_port
        if getattr(args, "uplink", None) == "none":
            self.http_port = 0
        self._last_key = None
        self._last_readings = 0

    def config(self):
        a = self.args
        cfg = {"device_id": a.device_id, "supply_voltage": a.voltage, "phases": a.phases,
               "max_current": a.max_current, "state_dir": os.path.abspath(a.state_dir),
               "broker": agent_brokers(a.agent_broker or a.broker or [self.address]),
               "topic_prefix": a.prefix,
               "model": "bench-sim"}
        if a.default_kw is not None:
            cfg["default_max_charge_rate"] = a.default_kw
        if getattr(a, "phase_switch", False):
            cfg["phase_switch"] = True
        cfg.update(self.bench.meters_config(getattr(a, "meter_baud", 9600)))
        if a.webhook_url:
            cfg.update(webhook_url=a.webhook_url, webhook_secret=a.webhook_secret or "")
        if a.ca:
            cfg["ca_file"] = os.path.abspath(a.ca)
        if a.username:
            cfg.update(username=a.username, password=a.password or "")
        cfg["uplinks"] = _UPLINKS[a.uplink or ("ocpp" if a.ocpp else "mqtt")]
        if not cfg["uplinks"]:
            del cfg["broker"]  # no network: the broker is the bench's alone
        if self.http_port:
            cfg["uplinks"] = cfg["uplinks"] + ["http"]
            cfg["http"] = {"host": "127.0.0.1", "port": self.http_port, "token": a.api_token}
        if a.ocpp:
            ca = a.ocpp_ca and os.path.abspath(a.ocpp_ca)
            cfg["ocpp"] = {k: v for k, v in (("url", a.ocpp), ("password", a.ocpp_password),
                                              ("ca_file", ca), ("id_tag", a.id_tag)) if v}
        if a.ota_keys:  # updates over the air (docs/ota.md)
            cfg["ota"] = {"keys": a.ota_keys}
        return cfg

    def start(self, before_power_on=None):
        """before_power_on(address): with the broker there, before the agent boots (the page
        starts there, so it sees the boot's events)."""
        os.makedirs(self.args.state_dir, exist_ok=True)
        if not self.args.broker:
            self.broker = Broker(Broker.preferred()).start()
        addresses = self.args.broker or [self.broker.address]
        say("sim: broker %s%s, device %s, state in %s" % (
            ", ".join(addresses), " (%s)" % self.broker.kind if self.broker else "",
            self.args.device_id, os.path.abspath(self.args.state_dir)))
        if self.broker and self.broker.kind == "amqtt":
            say("sim: Mosquitto is not installed, so this is amqtt, which can drop a QoS 0 "
                "request from a client that disconnects at once: publish with QoS 1 "
                "(mosquitto_pub -q 1), or apt-get install mosquitto")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="bench-" + self.args.device_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        if self.args.ca and not self.args.agent_broker:
            self.client.tls_set_context(tls_context(self.args.ca))
        if self.args.username and not self.args.agent_broker:
            self.client.username_pw_set(self.args.username, self.args.password)
        self.address = connect_bench(self.client, addresses)
        self.client.loop_start()
        if self.args.updates:
            self.updates = UpdateServer(self.args.updates)
            say("sim: updates served from %s at %s (evctl update %sFILE)" % (
                self.updates.folder, self.updates.url(), self.updates.url()))
        if before_power_on:
            before_power_on(self.address)
        self._power_on()
        self._announce_api()

    @property
    def api_url(self):
        return "http://127.0.0.1:%d/%s/%s" % (self.http_port, topics.PREFIX, self.args.device_id)

    def _announce_api(self):
        # The HTTP front's address and token, once it listens (docs/http.md, "The bench").
        if not self.http_port:
            return
        deadline = time.monotonic() + HTTP_WAIT_S
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.http_port), 0.5).close()
                say("sim: api %s (token %s)" % (self.api_url, self.args.api_token))
                return
            except OSError:
                time.sleep(0.1)
        say("sim: the HTTP front did not listen on port %d within %d s"
            % (self.http_port, HTTP_WAIT_S))

    def _power_on(self):
        self.agent = AgentProcess(self.config(), self.args.build,
                                  self.unix_base_ms, self.args.heapsize)
        self.bench.apply_outputs(self.agent.outputs)
        self.power = True
        if self.agent.resets:
            say("sim: agent reset at boot %d time(s)" % self.agent.resets)
        say("sim: agent powered on (pid %d)" % self.agent.proc.pid)

    def _power_off(self):
        if self.agent:
            self.agent.kill()
        self.agent = None
        self.power = False
        say("sim: agent power cut")

    def _on_connect(self, client, userdata, flags, reason, props):
        for name in ("ev", "fault", "power", "meter"):
            client.subscribe(self.bench_topic + name)

    def _on_message(self, client, userdata, msg):
        name = msg.topic[len(self.bench_topic):]
        try:
            body = loads(msg.payload)
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            with self.lock:
                if name == "ev":
                    self.bench.set_ev(body)
                elif name == "fault":
                    self.bench.set_fault(body.get("fault", "none"))
                elif name == "meter":
                    self.bench.set_meter_fault(body.get("meter"), body.get("fault"))
                elif name == "power":
                    if body.get("on") is False and self.power:
                        self._power_off()
                    elif body.get("on") is True and not self.power:
                        self._power_on()
                self._last_key = None  # publish readings now
        except (ValueError, TypeError) as e:
            say("sim: ignored %s: %s" % (msg.topic, e))

    def run(self):
        run_paced(self.stop, self.step)

    def step(self):
        with self.lock:
            self._tick()

    def _tick(self):
        b = self.bench
        b.step(TICK_MS)
        if self.agent is None:
            b.apply_outputs((0, False, False))
        else:
            try:
                b.apply_outputs(self.agent.tick(b.board_inputs()))
            except RuntimeError as e:
                if self.agent.exit_status() == RESTART_EXIT:  # it asked for a restart (Reset)
                    say("sim: agent restarting")
                    self._power_off()
                    self._power_on()
                    return
                say("sim: agent died: %s" % e)
                self._power_off()
        r = b.readings()
        key = (r["pilot"], r["contactor"], round(r["current"], 1), r["phases"], r["fault"],
               str(r["ev"]))
        if key != self._last_key or b.t - self._last_readings >= READINGS_EVERY_MS:
            self._last_key = key
            self._last_readings = b.t
            r["power_on"] = self.power
            self.client.publish(self.bench_topic + "readings", json.dumps(r))

    def shutdown(self):
        self.stop.set()
        self._power_off()
        self.bench.close()
        if self.client:
            self.client.disconnect()  # before loop_stop(), or the DISCONNECT waits ~1 s
            self.client.loop_stop()
        if self.broker:
            self.broker.stop()
        if self.updates:
            self.updates.stop()
        say("sim: stopped")


def agent_brokers(addresses):
    """The agent's "broker" for make sim's list of HOST:PORT: the one, or the list."""
    return addresses[0] if len(addresses) == 1 else list(addresses)


def connect_bench(client, addresses):
    """Connect a bench's own paho client to the first of `addresses` that answers, and keep
    it moving along them as the agent does (docs/uplinks.md, "Several brokers"): after a lost
    connection or a failed reconnect, paho's next attempt goes to the next address. Returns
    the address it reached."""
    at = [0]

    def move(*_):
        at[0] = (at[0] + 1) % len(addresses)
        host, _, port = addresses[at[0]].rpartition(":")
        client.connect_async(host, int(port), keepalive=30)  # paho's loop dials it next

    def lost(client, userdata, flags, reason, props):
        if reason.is_failure:  # not the disconnect we asked for at shutdown
            move()

    errors = []
    for k, address in enumerate(addresses):
        host, _, port = address.rpartition(":")
        try:
            client.connect(host, int(port), keepalive=30)
        except (OSError, ValueError) as e:
            errors.append("%s: %s" % (address, e))
            continue
        at[0] = k
        if len(addresses) > 1:
            client.on_disconnect = lost
            client.on_connect_fail = move
        return address
    raise OSError("cannot reach the broker at %s" % "; ".join(errors))


def say(text):
    # After SIGHUP the terminal is gone: a line that cannot be shown must not stop the
    # shutdown that follows it.
    try:
        print(text, flush=True)
    except OSError:
        pass


def next_steps(address, device_id):
    """What to paste into another terminal, at start."""
    evctl = os.path.join(os.path.dirname(sys.executable), "evctl")
    if not os.path.exists(evctl):
        evctl = "%s -m tools.evctl" % sys.executable
    env = "export EVSE_BROKER=%s" % address
    if device_id != "charger-1":
        env += " EVSE_DEVICE=%s" % device_id
    return ("sim: running; Ctrl-C to stop. Drive it from another terminal:\n"
            "  %s\n"
            "  %s ev connected=true request=true   # plug in a car\n"
            "  %s status                           # or: watch, cap 3.68, idle, charge, --help"
            % (env, evctl, evctl))
