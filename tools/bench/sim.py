"""make sim: the simulated charger on an MQTT broker (docs/bench.md).

The agent runs under the micropython binary with the simulated board; this process is the
bench around it (pilot, contactor, meter, RCD, vehicle) in real time, and serves the bench
topics. Without --broker a broker is started on a free loopback port: Mosquitto where it is
installed, amqtt otherwise (tools/bench/broker.py says why).

This is the launcher (its options and main): the charger itself is sim_charger.py's Sim, a
site of them site_bench.py's SiteSim.
"""
import argparse
import os
import secrets
import signal
import sys

from tools import ca, ota
from tools.bench import cloud_bench, site_bench
from tools.bench.meter_peer import MODELS
from tools.bench.page.server import DEFAULT_PORT, PageServer
from tools.bench.sim_charger import Sim, next_steps, say
from tools.bench.update_server import DEFAULT_PORT as UPDATES_PORT
from tools.device import unix32
from tools.paths import BUILDS, ROOT, cpython_paths

cpython_paths()
import config as firmware_config  # noqa: E402  (the broker list, the HTTP token: defined once)
import topics  # noqa: E402  (the firmware's topic prefix, defined once)

METER_MODELS = sorted(MODELS)


def parse(argv):
    p = argparse.ArgumentParser(prog="make sim ARGS=...", description=__doc__.split("\n")[0])
    p.add_argument("--broker", action="extend", type=_addresses, metavar="HOST:PORT[,...]",
                   help="an existing broker (default: start one, Mosquitto where installed, "
                   "else amqtt); several, comma-separated or repeated: the agent's broker list, "
                   "tried in order (docs/uplinks.md), and the bench's own client follows it")
    p.add_argument("--device-id", default="charger-1")
    p.add_argument("--state-dir", default=os.path.join(ROOT, "state"),
                   help="simulated flash; a later start with the same dir finds what was saved")
    p.add_argument("--voltage", type=float, default=230)
    p.add_argument("--phases", type=int, choices=(1, 3), default=1)
    p.add_argument("--phase-switch", action="store_true",
                   help="a second contactor switches L2/L3: one phase or three (needs "
                   "--phases 3; the setting phases_mode, docs/meters.md)")
    p.add_argument("--max-current", type=int, default=32)
    p.add_argument("--default-kw", type=float,
                   help="default_max_charge_rate: the cap after a factory reset (default 50)")
    p.add_argument("--prefix", default=topics.PREFIX, help="topic prefix of the agent")
    p.add_argument("--agent-broker", action="extend", type=_addresses,
                   metavar="HOST:PORT[,...]", help="for the agent only, when it must differ "
                   "from the bench's broker (fault tests: a broker that never answers); "
                   "--ca and --username are then the agent's only")
    p.add_argument("--ocpp", metavar="ws://HOST:PORT/PATH", help="an OCPP 1.6J central system: "
                   "the agent speaks OCPP (the charge point id, --device-id, is appended)")
    p.add_argument("--uplink", choices=("mqtt", "ocpp", "both", "none"),
                   help="default: ocpp with --ocpp, else mqtt (the bench's own topics stay "
                   "MQTT); none: a charger with no network at all (uplinks [])")
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
    p.add_argument("--http-port", type=_port, metavar="N",
                   help="the agent's HTTP front on 127.0.0.1:N (docs/http.md; with --chargers, "
                   "charger-K on N+K-1; default: a free port each; 0: none)")
    p.add_argument("--no-http", dest="http_port", action="store_const", const=0,
                   help="no HTTP front, as a board whose config has no http block (the same "
                   "as --http-port 0)")
    p.add_argument("--api-token", metavar="T", help="the HTTP front's token, at least %d "
                   "characters (default: a new one, printed)" % firmware_config.TOKEN_MIN)
    p.add_argument("--heapsize", default="512K", help="micropython heap: the 64-bit wheel "
                   "holds the .mpy bytecode in it (about 85 KB) and doubles every object "
                   "(MQTT, OCPP and HTTP together met no 3 KB block at 256K, nor the ws "
                   "client's 4 KB beside the updater); the ESP32 model is --build unix32 "
                   "--heapsize 56K")
    p.add_argument("--build", choices=BUILDS, default="wheel",
                   help="interpreter: the pip wheel's micropython (64-bit, agent as .mpy), or "
                   "make unix32's (32-bit, agent frozen as on an ESP32 image; -mpy: as .mpy)")
    p.add_argument("--ev-meter", metavar="MODEL", choices=METER_MODELS,
                   help="a Modbus EV meter on the board's RS485 bus (the bench's pymodbus "
                   "meter; one of %s)" % ", ".join(METER_MODELS))
    p.add_argument("--mains-meter", metavar="MODEL", choices=METER_MODELS,
                   help="a Modbus meter at the supply, on charger-1's bus: the site balances "
                   "on it with no network (needs --site-fuse)")
    p.add_argument("--meter-baud", type=int, default=9600, help="the RS485 bus's baud rate")
    p.add_argument("--ca", help="CA certificate (PEM or DER): the agent and the bench connect "
                   "over TLS and check the broker's certificate against it")
    p.add_argument("--username")
    p.add_argument("--password")
    p.add_argument("--updates", metavar="DIR", help="serve the releases in DIR over HTTP on "
                   "loopback (port %d, or a free one), for evctl update (docs/ota.md)"
                   % UPDATES_PORT)
    p.add_argument("--update-key", metavar="PEM", action="append", default=[],
                   help="the charger trusts updates signed by this key (python -m tools.ota "
                   "keygen's; only its public half goes to the charger); again for another")
    site_bench.add_arguments(p)
    cloud_bench.add_arguments(p)
    a = p.parse_args(argv)
    cloud_bench.check(p, a)
    if a.phase_switch and a.phases != 3:
        p.error("--phase-switch needs --phases 3")
    if a.api_token is None:
        a.api_token = secrets.token_urlsafe(18)
    why = firmware_config.token_problem(a.api_token)
    if why:
        p.error("--api-" + why)
    if a.http_port and a.http_port > 65536 - a.chargers:
        p.error("--http-port must leave a port for each charger: 1-%d" % (65536 - a.chargers))
    try:  # the config's ota.keys: each key's public half, as tools.ota pubkey prints it
        a.ota_keys = [ota.public_text(ota.load_key(path)) for path in a.update_key]
    except ota.OtaError as e:
        p.error(str(e))
    if a.updates and not os.path.isdir(a.updates):
        p.error("--updates %s is not a folder" % a.updates)
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
    if a.uplink == "none" and a.ocpp:
        p.error("--uplink none is a charger without a network: no --ocpp")
    if a.ocpp and a.build != "wheel" and (a.ocpp.startswith("wss:") or a.ocpp_ca):
        p.error("wss:// needs --build wheel: make unix32 is built without TLS")
    if a.build != "wheel":
        try:
            unix32.build()
        except (unix32.Unavailable, unix32.BuildError) as e:
            p.error(str(e))
        if a.ocpp and not unix32.has_sha1():  # the WebSocket handshake's
            p.error("--ocpp needs hashlib.sha1, and this make unix32 has none: "
                    + unix32.NEED_MBEDTLS)
    if a.mains_meter and a.site_fuse is None:
        p.error("--mains-meter needs --site-fuse A (the fuse it guards)")
    if site_bench.wanted(a):
        site_bench.check(p, a)
    return a


def _addresses(text):
    """--broker's HOST:PORT, or several comma-separated, checked as the agent's config is."""
    found = text.split(",")
    why = firmware_config.brokers({"broker": found})
    if type(why) is str:
        raise argparse.ArgumentTypeError(why.replace("broker entry", "entry"))
    return found


def _port(text):
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError("%r is not a port (0-65535)" % text)
    return int(text)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
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
