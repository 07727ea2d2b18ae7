"""make sim: the simulated charger on an MQTT broker (docs/bench.md).

The agent runs under the micropython binary with the simulated board; this process is the
bench around it (pilot, contactor, meter, RCD, vehicle) in real time, and serves the bench
topics. Without --broker a broker is started on a free loopback port: Mosquitto where it is
installed, amqtt otherwise (tools/bench/broker.py says why).
"""
import argparse
import json
import os
import signal
import sys
import threading
import time

import paho.mqtt.client as mqtt

from tools import ca
from tools.bench.agent_process import AgentProcess
from tools.bench.bench import Bench
from tools.bench.broker import Broker
from tools.bench.page.server import DEFAULT_PORT, PageServer
from tools.device import unix32
from tools.client import tls_context
from tools.json_input import loads
from tools.paths import BUILDS, ROOT, cpython_paths

cpython_paths()
import topics  # noqa: E402
from sim_board import RESTART_EXIT, Board  # noqa: E402

TICK_MS = Board.TICK_MS
READINGS_EVERY_MS = 1000


def parse(argv):
    p = argparse.ArgumentParser(prog="make sim ARGS=...", description=__doc__.split("\n")[0])
    p.add_argument("--broker", help="HOST:PORT of an existing broker (default: start one, "
                   "Mosquitto where installed, else amqtt)")
    p.add_argument("--device-id", default="charger-1")
    p.add_argument("--state-dir", default=os.path.join(ROOT, "state"),
                   help="simulated flash; a later start with the same dir finds what was saved")
    p.add_argument("--voltage", type=float, default=230)
    p.add_argument("--phases", type=int, choices=(1, 3), default=1)
    p.add_argument("--max-current", type=int, default=32)
    p.add_argument("--default-kw", type=float,
                   help="default_max_charge_rate: the cap after a factory reset (default 50)")
    p.add_argument("--prefix", default=topics.PREFIX, help="topic prefix of the agent")
    p.add_argument("--agent-broker", help="HOST:PORT for the agent only, when it must differ "
                   "from the bench's broker (fault tests: a broker that never answers); "
                   "--ca and --username are then the agent's only")
    p.add_argument("--ocpp", metavar="ws://HOST:PORT/PATH", help="an OCPP 1.6J central system: "
                   "the agent speaks OCPP (the charge point id, --device-id, is appended)")
    p.add_argument("--uplink", choices=("mqtt", "ocpp", "both"),
                   help="default: ocpp with --ocpp, else mqtt (the bench's own topics stay MQTT)")
    p.add_argument("--ocpp-password", help="HTTP Basic auth (security profiles 1 and 2)")
    p.add_argument("--ocpp-ca", help="the CA (PEM or DER) that signed a wss:// CSMS's "
                   "certificate")
    p.add_argument("--id-tag", help="plug and charge with this idTag (default: wait for "
                   "RemoteStartTransaction)")
    p.add_argument("--webhook-url")
    p.add_argument("--webhook-secret")
    p.add_argument("--page-port", type=_port, metavar="N",
                   help="serve the live bench page on 127.0.0.1:N (default %d, or a free port "
                   "when that is taken; 0: no page)" % DEFAULT_PORT)
    p.add_argument("--no-page", dest="page_port", action="store_const", const=0,
                   help="no page (the same as --page-port 0)")
    p.add_argument("--heapsize", default="256K", help="micropython heap: the 64-bit wheel "
                   "holds the .mpy bytecode in it (about 85 KB); the ESP32 model is "
                   "--build unix32 --heapsize 56K")
    p.add_argument("--build", choices=BUILDS, default="wheel",
                   help="interpreter: the pip wheel's micropython (64-bit, agent as .mpy), or "
                   "make unix32's (32-bit, agent frozen as on an ESP32 image; -mpy: as .mpy)")
    p.add_argument("--ca", help="CA certificate (PEM or DER): the agent and the bench connect "
                   "over TLS and check the broker's certificate against it")
    p.add_argument("--username")
    p.add_argument("--password")
    from tools.bench import cloud_bench, site_bench  # here: they build on Sim, below
    site_bench.add_arguments(p)
    cloud_bench.add_arguments(p)
    a = p.parse_args(argv)
    cloud_bench.check(p, a)
    if a.ca and not (a.broker or a.agent_broker):
        p.error("--ca needs --broker HOST:PORT (the embedded broker has no TLS)")
    for path in (a.ca, a.ocpp_ca):  # PEM or DER; anything else is refused here, once
        why = path and ca.problem(path)
        if why:
            p.error(why)
    if a.ca and a.build != "wheel":
        p.error("--ca needs --build wheel: make unix32 is built without TLS")
    if a.uplink in ("ocpp", "both") and not a.ocpp:
        p.error("--uplink %s needs --ocpp URL" % a.uplink)
    if a.ocpp and a.build != "wheel":
        p.error("--ocpp needs --build wheel: make unix32 is built without TLS, and so without "
                "the hashlib.sha1 of the WebSocket handshake")
    if a.build != "wheel":
        try:
            unix32.build()
        except (unix32.Unavailable, unix32.BuildError) as e:
            p.error(str(e))
    if site_bench.wanted(a):
        site_bench.check(p, a)
    return a


def _port(text):
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError("%r is not a port (0-65535)" % text)
    return int(text)


class Sim:
    def __init__(self, args):
        self.args = args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.bench = Bench(voltage=args.voltage, phases=args.phases)
        self.broker = None
        self.client = None
        self.agent = None
        self.power = True
        self.unix_base_ms = int(time.time() * 1000)
        self.bench_topic = "bench/%s/" % args.device_id
        self._last_key = None
        self._last_readings = 0

    def config(self):
        a = self.args
        cfg = {"device_id": a.device_id, "supply_voltage": a.voltage, "phases": a.phases,
               "max_current": a.max_current, "state_dir": os.path.abspath(a.state_dir),
               "broker": a.agent_broker or self.address, "topic_prefix": a.prefix,
               "model": "bench-sim"}
        if a.default_kw is not None:
            cfg["default_max_charge_rate"] = a.default_kw
        if a.webhook_url:
            cfg.update(webhook_url=a.webhook_url, webhook_secret=a.webhook_secret or "")
        if a.ca:
            cfg["ca_file"] = os.path.abspath(a.ca)
        if a.username:
            cfg.update(username=a.username, password=a.password or "")
        if a.ocpp:
            cfg["uplink"] = a.uplink or "ocpp"
            ca = a.ocpp_ca and os.path.abspath(a.ocpp_ca)
            cfg["ocpp"] = {k: v for k, v in (("url", a.ocpp), ("password", a.ocpp_password),
                                              ("ca_file", ca), ("id_tag", a.id_tag)) if v}
        return cfg

    def start(self, before_power_on=None):
        """before_power_on(address): with the broker there, before the agent boots (the page
        starts there, so it sees the boot's events)."""
        os.makedirs(self.args.state_dir, exist_ok=True)
        if self.args.broker:
            self.address = self.args.broker
        else:
            self.broker = Broker(Broker.preferred()).start()
            self.address = self.broker.address
        say("sim: broker %s%s, device %s, state in %s" % (
            self.address, " (%s)" % self.broker.kind if self.broker else "",
            self.args.device_id, os.path.abspath(self.args.state_dir)))
        if self.broker and self.broker.kind == "amqtt":
            say("sim: Mosquitto is not installed, so this is amqtt, which can drop a QoS 0 "
                "request from a client that disconnects at once: publish with QoS 1 "
                "(mosquitto_pub -q 1), or apt-get install mosquitto")
        host, _, port = self.address.rpartition(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="bench-" + self.args.device_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        if self.args.ca and not self.args.agent_broker:
            self.client.tls_set_context(tls_context(self.args.ca))
        if self.args.username and not self.args.agent_broker:
            self.client.username_pw_set(self.args.username, self.args.password)
        try:
            self.client.connect(host, int(port), keepalive=30)
        except (OSError, ValueError) as e:
            raise OSError("cannot reach the broker at %s: %s" % (self.address, e))
        self.client.loop_start()
        if before_power_on:
            before_power_on(self.address)
        self._power_on()

    def _power_on(self):
        self.agent = AgentProcess(self.config(), self.args.build,
                                  self.unix_base_ms, self.args.heapsize)
        self.bench.drive_outputs(*self.agent.outputs)
        self.power = True
        say("sim: agent powered on (pid %d)" % self.agent.proc.pid)

    def _power_off(self):
        if self.agent:
            self.agent.kill()
        self.agent = None
        self.power = False
        say("sim: agent power cut")

    def _on_connect(self, client, userdata, flags, reason, props):
        for name in ("ev", "fault", "power"):
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
                elif name == "power":
                    if body.get("on") is False and self.power:
                        self._power_off()
                    elif body.get("on") is True and not self.power:
                        self._power_on()
                self._last_key = None  # publish readings now
        except (ValueError, TypeError) as e:
            say("sim: ignored %s: %s" % (msg.topic, e))

    def run(self):
        next_at = time.monotonic()
        while not self.stop.is_set():
            with self.lock:
                self._tick()
            next_at += TICK_MS / 1000
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.5:
                next_at = time.monotonic()  # fell far behind (a stall): do not race to catch up

    def _tick(self):
        b = self.bench
        b.step(TICK_MS)
        if self.agent is None:
            b.drive_outputs(0, False)
        else:
            try:
                b.drive_outputs(*self.agent.tick(b.board_inputs()))
            except RuntimeError as e:
                if self.agent.exit_status() == RESTART_EXIT:  # it asked for a restart (Reset)
                    say("sim: agent restarting")
                    self._power_off()
                    self._power_on()
                    return
                say("sim: agent died: %s" % e)
                self._power_off()
        r = b.readings()
        key = (r["pilot"], r["contactor"], round(r["current"], 1), r["fault"], str(r["ev"]))
        if key != self._last_key or b.t - self._last_readings >= READINGS_EVERY_MS:
            self._last_key = key
            self._last_readings = b.t
            r["power_on"] = self.power
            self.client.publish(self.bench_topic + "readings", json.dumps(r))

    def shutdown(self):
        self.stop.set()
        self._power_off()
        if self.client:
            self.client.disconnect()  # before loop_stop(), or the DISCONNECT waits ~1 s
            self.client.loop_stop()
        if self.broker:
            self.broker.stop()
        say("sim: stopped")


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


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    from tools.bench import cloud_bench, site_bench
    if site_bench.wanted(args):  # several chargers and a site meter: its own launcher
        return site_bench.main(args)
    sim = Sim(args)
    # Ctrl-C, SIGTERM and a closed terminal (SIGHUP) all stop it the same clean way.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sim.stop.set())
    code = 0
    pages = []

    def serve_page(address):
        a = sim.args
        if a.page_port != 0 and (a.ca or a.username) and not a.agent_broker:
            say("sim: no bench page: its client has no TLS or password for this broker")
            return
        if sim.args.page_port != 0:
            pages.append(PageServer(address, [sim.args.device_id], sim.args.prefix,
                                    sim.args.page_port).start())
            say("sim: page %s (the live bench: watch and drive it in a browser)" % pages[0].url)

    cloud = None
    try:
        sim.start(serve_page)
        say(next_steps(sim.address, sim.args.device_id))
        if cloud_bench.wanted(args):
            cloud = cloud_bench.CloudBench(args, sim.address, [args.device_id], say)
        sim.run()
    except (OSError, RuntimeError) as e:  # a broker that is not there, a firmware that fails
        say("sim: error: %s" % e)
        code = 1
    finally:
        if cloud:
            cloud.stop()
        for page in pages:
            page.stop()
        with sim.lock:
            sim.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
