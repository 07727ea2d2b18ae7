"""make sim with a site: several simulated chargers behind one supply (docs/bench.md, "A site").

    make sim ARGS="--chargers 3 --site-fuse 25 [--site-phases 1|3] [--household FILE]"

Each charger is make sim's own (sim.py's Sim: its agent under micropython, board, vehicle,
flash and bench/{id}/... topics) with a site block in its config; this process adds the site
(site.py): the household load, driven over bench/site/{id}/household or from a scripted day,
and the site meter that publishes site/{id}/meter every second, silenced over
bench/site/{id}/meter. bench/site/{id}/readings reports the site every second. All run on
one broker, in real time, on one clock.
"""
import copy
import json
import os
import signal
import threading
import time

import paho.mqtt.client as mqtt

from tools.bench import cloud_bench
from tools.bench.bench import meters_block
from tools.bench.broker import Broker
from tools.bench.page.server import PageServer
from tools.bench.sim_charger import Sim, connect_bench, next_steps, run_paced, say
from tools.bench.site import METER_PERIOD_MS, Schedule, Site, bench_topic, default_lines, load_day
from tools.bench.site_rig import offered
from tools.json_input import loads
from tools.paths import cpython_paths

cpython_paths()
import config as firmware_config  # noqa: E402  (the firmware's own checks of a config)

MAX_CHARGERS = 12


def add_arguments(p):
    g = p.add_argument_group("a site (several chargers behind one supply, docs/site.md)")
    g.add_argument("--chargers", type=int, default=1, help="chargers charger-1 ... charger-N "
                   "(more than 1 needs --site-fuse)")
    g.add_argument("--site-fuse", type=float, metavar="A", help="the main fuse per phase: "
                   "the chargers balance against a simulated site meter")
    g.add_argument("--site-phases", type=int, choices=(1, 3), default=1)
    g.add_argument("--site-lines", metavar="P,P,...", help="the site phase of each single-"
                   "phase charger (default: L1, L2, L3, L1, ... on a 3-phase site)")
    g.add_argument("--site-id", default="home")
    g.add_argument("--household", metavar="FILE", help="a scripted household: a JSON list of "
                   "[t_seconds, [L1, L2, L3]]")
    g.add_argument("--meter-timeout", type=float, metavar="S", help="site meter_timeout_s "
                   "(default 10)")
    g.add_argument("--fallback-current", type=float, metavar="A",
                   help="site fallback_current (default 0)")
    g.add_argument("--margin-current", type=float, metavar="A",
                   help="site margin_current (default 1)")


def wanted(a):
    return a.chargers != 1 or a.site_fuse is not None


def check(p, a):
    """One clear line (argparse's error) for a site option that cannot work."""
    if not 1 <= a.chargers <= MAX_CHARGERS:
        p.error("--chargers must be 1 to %d" % MAX_CHARGERS)
    if a.site_fuse is None:
        p.error("--chargers %d needs --site-fuse A (the site's main fuse)" % a.chargers)
    if a.device_id != "charger-1" and a.chargers > 1:
        p.error("--device-id cannot be used with --chargers: the ids are charger-1 ... "
                "charger-%d" % a.chargers)
    if a.uplink == "none" and a.chargers > 1:
        p.error("--uplink none: with no network only a charger with its own mains meter "
                "balances, so --chargers 1 --mains-meter MODEL")
    if a.phases == 3 and a.site_phases != 3:
        p.error("--phases 3 needs --site-phases 3")
    try:
        a.lines = lines(a)
        a.day = load_day(a.household, a.site_phases) if a.household else None
    except ValueError as e:
        p.error(str(e))
    # The firmware's own checks of the config charger-1 will boot with (a timeout of 0, a
    # fuse of 2 A ...), so a mistake is one line here and not a firmware that fails to start.
    ch = SiteCharger(charger_args(a, 0, ["127.0.0.1:1"]), site_block(a, 0), 0, meters={})
    ch.address = "127.0.0.1:1"
    cfg = ch.config()
    if meters(a, 0):
        cfg["meters"] = meters_block(meters(a, 0), a.meter_baud)
    errors = firmware_config.check(cfg)
    if errors:
        p.error("; ".join(errors))


def lines(a):
    if a.phases == 3 or not a.site_lines:
        if a.site_lines:
            raise ValueError("--site-lines is for single-phase chargers")
        return default_lines(a.chargers, a.phases, a.site_phases)
    try:
        got = [[int(x)] for x in a.site_lines.split(",")]
    except ValueError:
        raise ValueError("--site-lines must be phase numbers, e.g. 1,1,2")
    if len(got) != a.chargers or any(not 1 <= p[0] <= a.site_phases for p in got):
        raise ValueError("--site-lines must give one site phase (1-%d) for each of the %d "
                         "chargers" % (a.site_phases, a.chargers))
    return got


def site_block(a, k):
    block = {"id": a.site_id, "fuse_current": a.site_fuse, "phases": a.lines[k]}
    for key, value in (("meter_timeout_s", a.meter_timeout),
                       ("fallback_current", a.fallback_current),
                       ("margin_current", a.margin_current)):
        if value is not None:
            block[key] = value
    return block


def meters(a, k):
    """The Modbus meters on charger k's bus: --ev-meter on each, --mains-meter on the first."""
    out = {"ev": a.ev_meter} if a.ev_meter else {}
    if k == 0 and a.mains_meter:
        out["mains"] = a.mains_meter
    return out


def charger_args(a, k, addresses):
    c = copy.copy(a)
    c.device_id = "charger-%d" % (k + 1)
    c.state_dir = os.path.join(a.state_dir, c.device_id)
    c.broker = addresses
    c.http_port = a.http_port + k if a.http_port else a.http_port  # one port each (0: none)
    return c


class SiteCharger(Sim):
    """make sim's charger with the site block in its config."""

    def __init__(self, args, block, unix_base_ms, meters=None):
        super().__init__(args, meters)
        self.block = block
        self.unix_base_ms = unix_base_ms  # one clock for the site: records carry their ts

    def config(self):
        return dict(super().config(), site=self.block)

    def status(self):
        with self.lock:
            b = self.bench
            return {"current": round(b.current, 2), "offered": round(offered(b), 2),
                    "powerOn": self.power}


class SiteSim:
    def __init__(self, args):
        self.args = args
        self.stop = threading.Event()
        self.lock = threading.Lock()  # the household and the meter's switch
        ids = ["charger-%d" % (k + 1) for k in range(args.chargers)]
        self.site = Site(args.site_id, args.site_fuse, args.site_phases,
                         dict(zip(ids, args.lines)))
        self.schedule = Schedule(args.day) if args.day else None
        self.broker = None
        self.client = None
        self.page = None
        self.chargers = []
        self.address = None

    def start(self):
        a = self.args
        if not a.broker:
            self.broker = Broker(Broker.preferred()).start()
        addresses = a.broker or [self.broker.address]
        say("sim: broker %s%s, site %s: %g A x %d phase(s), %d chargers, meter on %s" % (
            ", ".join(addresses), " (%s)" % self.broker.kind if self.broker else "", self.site.id,
            self.site.fuse, self.site.phases, a.chargers, self.site.meter_topic))
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="bench-site-" + self.site.id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.address = connect_bench(self.client, addresses)
        self.client.loop_start()
        if a.page_port != 0:  # one page: the site and a tab per charger; before they boot
            ids = ["charger-%d" % (k + 1) for k in range(a.chargers)]
            self.page = PageServer(self.address, ids, a.prefix, a.page_port,
                                   site=(self.site.id, self.site.phases)).start()
            say("sim: page %s (the live bench: watch and drive it in a browser)"
                % self.page.url)
        base = int(time.time() * 1000)
        for k in range(a.chargers):
            ch = SiteCharger(charger_args(a, k, addresses), site_block(a, k), base,
                             meters(a, k))
            if "mains" in ch.bench.peers:  # the meter at the supply sees the whole site
                ch.bench.mains_currents = self.currents
            self.chargers.append(ch)
            ch.start()

    def currents(self):
        """The site current per phase now (what the mains meter reads)."""
        return self.site.currents({ch.args.device_id: ch.bench.current
                                   for ch in self.chargers})

    def _mains(self):
        """charger-1's Modbus meter at the supply, or None: the site's meter then publishes
        itself, as a Shelly does."""
        return self.chargers[0].bench.peers.get("mains") if self.chargers else None

    def _on_connect(self, client, userdata, flags, reason, props):
        for name in ("household", "meter"):
            client.subscribe(bench_topic(self.site.id, name))

    def _on_message(self, client, userdata, msg):
        name = msg.topic.rsplit("/", 1)[-1]
        try:
            body = loads(msg.payload)
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            with self.lock:
                if name == "household":
                    if "currents" not in body:
                        raise ValueError('expected {"currents": [L1, L2, L3]}')
                    self.site.set_household(body["currents"])
                elif name == "meter":
                    if type(body.get("on")) is not bool:
                        raise ValueError('expected {"on": true} or {"on": false}')
                    self.site.meter_on = body["on"]
                    if self._mains():
                        self._mains().fault = None if body["on"] else "silent"
        except ValueError as e:
            say("sim: ignored %s: %s" % (msg.topic, e))

    def run(self):
        run_paced(self.stop, self._step)

    def _step(self):
        for ch in self.chargers:
            ch.step()
        self._site_step(self.chargers[0].bench.t)

    def _site_step(self, t):
        with self.lock:
            if self.schedule:
                for currents in self.schedule.due(t):
                    self.site.set_household(currents)
            if t % METER_PERIOD_MS:
                return
            status = {ch.args.device_id: ch.status() for ch in self.chargers}
            draws = {cid: s["current"] for cid, s in status.items()}
            if self.site.meter_on and not self._mains():
                self.client.publish(self.site.meter_topic, self.site.meter_payload(
                    self.chargers[0].unix_base_ms + t, draws))
            self.client.publish(bench_topic(self.site.id, "readings"),
                                json.dumps(self.site.readings(t, status)))

    def shutdown(self):
        self.stop.set()
        if self.page:
            self.page.stop()
        for ch in self.chargers:
            with ch.lock:
                ch._power_off()
            ch.bench.close()
            if ch.client:
                ch.client.disconnect()
                ch.client.loop_stop()
        if self.client:
            self.client.disconnect()
            self.client.loop_stop()
        if self.broker:
            self.broker.stop()
        say("sim: stopped")


def main(args):
    sim = SiteSim(args)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sim.stop.set())
    code = 0
    cloud = None
    try:
        sim.start()
        say(next_steps(sim.address, "charger-1"))
        say(site_steps(sim))
        if cloud_bench.wanted(args):
            cloud = cloud_bench.CloudBench(args, sim.address, [
                ch.args.device_id for ch in sim.chargers], say)
        sim.run()
    except (OSError, RuntimeError) as e:
        say("sim: error: %s" % e)
        code = 1
    finally:
        if cloud:
            cloud.stop()
        sim.shutdown()
    return code


def site_steps(sim):
    host, _, port = sim.address.rpartition(":")
    pub = "mosquitto_pub -q 1 -h %s -p %s" % (host, port)
    return ("  %s -t %s -m '{\"currents\": [9]}'   # a 9 A kettle on L1\n"
            "  %s -t %s -m '{\"on\": false}'       # the meter fails\n"
            "  mosquitto_sub -h %s -p %s -t %s   # the site, every second\n"
            "  (each charger: EVSE_DEVICE=charger-2 evctl ..., bench/charger-2/ev ...)"
            % (pub, bench_topic(sim.site.id, "household"), pub,
               bench_topic(sim.site.id, "meter"), host, port,
               bench_topic(sim.site.id, "readings")))
