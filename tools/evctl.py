"""evctl: read and drive a charger (and its bench) over MQTT from a terminal.

  evctl status                     # one screen: status, power, cap and limits, last action
  evctl read                       # the device read, as JSON
  evctl cap 7.4                    # write max_charge_rate (kW)
  evctl limit 10 [--kw] [--ttl 90] # a dynamic limit (A per phase, or kW) for ttl seconds
  evctl limit clear                # back to the other ceilings
  evctl phases 1 | 3 | auto        # write phases_mode (a charger with phase_switch)
  evctl charge | idle [--replace] [--action-id ID]
  evctl watch [--raw]              # one line per change (--raw: every message as it comes)
  evctl ev connected=true request=true maxCurrent=16     # the simulated vehicle (make sim)
  evctl fault pilot_short | none                         # a bench fault (make sim)
  evctl meter ev crc | silent | address | exception | none   # a bench Modbus meter's fault
  evctl power off | on                                   # cut / restore the board's power
  evctl update http://HOST/app-0.3.0.tar   # a signed update (its release file beside it)
  evctl --broker HOST:8883 --ca ca.der --username U --password P status    # over TLS

The broker comes from --broker HOST:PORT or $EVSE_BROKER, the charger from --device-id or
$EVSE_DEVICE (default charger-1); `make sim` prints both. Run it as `make evctl ARGS="..."`
from the repository, or as .venv/bin/evctl from anywhere.

Exit status: 0 done; 1 the charger refused (its error is printed); 2 a bad argument;
3 the broker or the charger cannot be reached.
"""
# The command line only: the MQTT client under it, which the tests and make bench share, is
# tools/client.py.
import argparse
import datetime
import json
import math
import os
import sys
import time
import urllib.request

from tools.bench.bench import EV_FIELDS, FAULTS, METER_ROLES, ev_field_problem
from tools.bench.meter_peer import FAULTS as METER_FAULTS
from tools.client import BENCH_ANSWER_S, Charger, Unreachable, split_address
from tools.json_input import loads
import limits  # the firmware's (tools.client put it on the path): the ttl bounds
import settings  # the firmware's: phases_mode's values
import topics  # the firmware's: the default prefix

REFUSED, USAGE, UNREACHABLE = 1, 2, 3
RELEASE_BYTES = 4096  # a release file is about 1 KB
FOLLOW_READ_S = 5  # evctl update asks whether the new version is valid yet this often


# -- the command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, no usage dump: the person sees what is wrong and where help is.
        self.exit(USAGE, "%s: error: %s (evctl --help)\n" % (self.prog, message))


def _broker(text):
    try:
        split_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "%r is not HOST:PORT (make sim prints the broker's address)" % text)
    return text


def _float(text):
    """float(text), or NaN where it is no number (which every caller refuses)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _kw(text):
    value = _float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError("%r is not a power in kW (e.g. 7.4)" % text)
    return value


def _limit_value(text):
    if text == "clear":
        return text
    value = _float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError("%r is not a limit (amps, kW with --kw, or clear)"
                                         % text)
    return value


def _ca(path):
    from tools import ca  # here: cryptography only for a run that is given a CA
    why = ca.problem(path)
    if why:
        raise argparse.ArgumentTypeError(why)
    return path


def _timeout(text):
    value = _float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError("%r is not a number of seconds above 0" % text)
    return value


def _ev_field(text):
    # Checked here by the bench's own rule: the bench ignores what it refuses, so a value it
    # would not take must never be sent as if it were (evctl would print success).
    name, sep, raw = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("%r: write NAME=VALUE, e.g. connected=true" % text)
    try:
        value = loads(raw)
    except ValueError:
        value = raw
    problem = ev_field_problem(name, value)
    if problem:
        raise argparse.ArgumentTypeError(problem if name not in EV_FIELDS else "%s, not %r" % (
            problem, raw if len(raw) <= 20 else raw[:20] + "..."))
    return name, value


def parse(argv):
    env_broker = os.environ.get("EVSE_BROKER")
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: the same options are accepted before and after the command.
    common.add_argument("--broker", type=_broker, default=argparse.SUPPRESS,
                        help="HOST:PORT (default $EVSE_BROKER%s)"
                        % (", now %s" % env_broker if env_broker else ""))
    common.add_argument("--device-id", default=argparse.SUPPRESS,
                        help="default $EVSE_DEVICE or charger-1")
    common.add_argument("--prefix", default=argparse.SUPPRESS, help="default " + topics.PREFIX)
    common.add_argument("--timeout", type=_timeout, default=argparse.SUPPRESS,
                        help="seconds to wait for a reply (default 10)")
    common.add_argument("--ca", type=_ca, default=argparse.SUPPRESS,
                        help="CA certificate (PEM or DER): TLS, the broker checked against it")
    common.add_argument("--username", default=argparse.SUPPRESS)
    common.add_argument("--password", default=argparse.SUPPRESS)
    p = _Parser(prog="evctl", description=__doc__.split("\n")[0], parents=[common],
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog=__doc__.split("\n", 2)[2])
    sub = p.add_subparsers(dest="what", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    add = lambda name, text: sub.add_parser(name, help=text, parents=[common])  # noqa: E731
    add("status", "one screen: status, power, cap and limits, last action")
    add("read", "the device read, as JSON")
    c = add("cap", "write max_charge_rate, the persistent power ceiling (kW)")
    c.add_argument("kw", type=_kw, metavar="KW")
    c = add("limit", "set a dynamic limit (volatile; the failsafe when its ttl runs out) "
                     "or clear it")
    c.add_argument("value", type=_limit_value, metavar="A|clear",
                   help="amps per phase (kW with --kw), or clear")
    c.add_argument("--kw", action="store_true", help="the value is in kW")
    c.add_argument("--ttl", type=int, help="seconds it lasts unless renewed (the charger "
                   "takes %d-%d; default %d)" % (limits.TTL_MIN, limits.TTL_MAX,
                                                  limits.TTL_DEFAULT))
    c = add("phases", "write phases_mode: one phase, three, or auto by the power ceilings "
                      "(a charger whose config has phase_switch)")
    c.add_argument("mode", choices=[str(m) for m in settings.MODES], metavar="1|3|auto")
    for name in ("charge", "idle"):
        c = add(name, "the %s command" % name)
        c.add_argument("--replace", action="store_true",
                       help="onConflict: cancel_and_replace (take over a running action)")
        c.add_argument("--action-id", help="an actionId of yours (a repeat is not re-run)")
    c = add("watch", "one line per change until Ctrl-C")
    c.add_argument("--raw", action="store_true", help="every message, as it comes")
    c = add("ev", "set the simulated vehicle (make sim's bench)")
    c.add_argument("fields", type=_ev_field, nargs="+", metavar="NAME=VALUE",
                   help=", ".join(EV_FIELDS))
    c = add("fault", "raise a bench fault, or clear it with none (make sim's bench)")
    c.add_argument("fault", choices=FAULTS)
    c = add("power", "cut (off) or restore (on) the board's power (make sim's bench)")
    c.add_argument("state", choices=("on", "off"), metavar="on|off")
    c = add("meter", "a fault on one of the bench's Modbus meters, or none to clear it "
                     "(make sim --ev-meter / --mains-meter)")
    c.add_argument("meter", choices=METER_ROLES)
    c.add_argument("fault", choices=METER_FAULTS + ("none",))
    c = add("update", "update the firmware from a signed release, and follow it to its "
                      "outcome: valid, failed or rolled back (docs/ota.md)")
    c.add_argument("url", metavar="URL", help="the release's file (a bundle or an image), "
                   "http:// or https://, as the charger will download it")
    c.add_argument("--release", metavar="FILE", help="its release file (python -m tools.ota "
                   "sign's FILE.ota.json; default: fetched from URL.ota.json)")
    c.add_argument("--refuse-during-session", action="store_true",
                   help="refused while a session draws current (default: the update waits "
                   "for the session to end)")
    c.add_argument("--no-follow", action="store_true", help="return once it is accepted")
    a = p.parse_args(argv)
    a.broker = getattr(a, "broker", None) or env_broker
    if not a.broker:
        p.error("no broker: give --broker HOST:PORT or set EVSE_BROKER (make sim prints it)")
    try:
        split_address(a.broker)
    except ValueError:
        p.error("EVSE_BROKER=%r is not HOST:PORT" % a.broker)
    a.device_id = getattr(a, "device_id", None) or os.environ.get("EVSE_DEVICE") or "charger-1"
    a.prefix = getattr(a, "prefix", None) or topics.PREFIX
    a.timeout = getattr(a, "timeout", None) or 10.0
    for key in ("ca", "username", "password"):
        setattr(a, key, getattr(a, key, None))
    return a


def main(argv=None):
    a = parse(sys.argv[1:] if argv is None else argv)
    try:
        c = Charger(a.broker, a.device_id, a.prefix, timeout=5, ca=a.ca, username=a.username,
                    password=a.password)
    except Unreachable as e:
        return _fail(UNREACHABLE, e)
    try:
        return RUN[a.what](c, a)
    except Unreachable as e:
        return _fail(UNREACHABLE, e)
    except TimeoutError:
        return _fail(UNREACHABLE, "%s did not answer within %g s (busy, or its broker link is "
                     "down: evctl watch shows its availability)" % (a.device_id, a.timeout))
    except KeyboardInterrupt:
        return 0
    finally:
        c.close()


def _fail(code, message):
    print("evctl: error: %s" % message, file=sys.stderr)
    return code


def _online(c):
    """Refuse at once to talk to a charger that is not there, saying why."""
    if c.availability is None:
        try:  # a broker may send a retained message a moment after the SUBACKs
            c.wait(lambda: c.availability is not None, 0.3)
        except TimeoutError:
            raise Unreachable("%s was never seen on %s (no retained availability): check "
                              "--device-id" % (c.device_id, c.address))
    if c.availability != "online":
        raise Unreachable("%s is %s on %s (its last will): is the charger, or make sim, "
                          "running?" % (c.device_id, c.availability, c.address))


def _reply(c, a, kind, body):
    _online(c)
    reply = c.request(kind, body, a.timeout)
    if not reply.get("success"):
        err = reply.get("error") or {}
        print("evctl: error: %s refused by %s (%s %s): %s" % (
            a.what, c.device_id, reply.get("meta", {}).get("status"), err.get("code"),
            err.get("message")), file=sys.stderr)
    return reply


def _run_read(c, a):
    reply = _reply(c, a, "read", {})
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("success") else REFUSED


def _run_cap(c, a):
    reply = _reply(c, a, "settings", {"settings": {"max_charge_rate": {"value": a.kw,
                                                                       "unit": "kw"}}})
    if not reply.get("success"):
        return REFUSED
    print("cap: max_charge_rate is %s kW" % _num(a.kw))
    note = (reply.get("data") or {}).get("note")
    if note:  # e.g. below the 6 A the pilot can signal: the charger stays suspended
        print("note: " + note)
    return 0


def _run_phases(c, a):
    mode = a.mode if a.mode == "auto" else int(a.mode)
    reply = _reply(c, a, "settings", {"settings": {"phases_mode": {"value": mode,
                                                                   "unit": "phases"}}})
    if not reply.get("success"):
        return REFUSED
    print("phases: phases_mode is %s (the switch waits for a pause, its settle time and "
          "interval: evctl status shows it)" % a.mode)
    return 0


def _run_limit(c, a):
    if a.value == "clear":
        body = {"limit": None}
    else:
        body = {"limit": {"value": a.value, "unit": "kw" if a.kw else "a"}, "source": "evctl"}
        if a.ttl is not None:
            body["ttl"] = a.ttl
    reply = _reply(c, a, "limit", body)
    if not reply.get("success"):
        return REFUSED
    if a.value == "clear":
        print("limit: cleared")
    else:
        print("limit: %s %s until %s (renew to keep it; then the failsafe)" % (
            _num(a.value), "kW" if a.kw else "A", (reply.get("data") or {}).get("expiresAt")))
    return 0


def _run_command(c, a):
    extra = {}
    if a.replace:
        extra["onConflict"] = "cancel_and_replace"
    if a.action_id:
        extra["actionId"] = a.action_id
    reply = _reply(c, a, "commands", dict(extra, action={"command": a.what}))
    if not reply.get("success"):
        return REFUSED
    data = reply.get("data") or {}
    print("%s: %s (%s)" % (a.what, data.get("state"), data.get("id")))
    return 0


def _run_bench(c, a):
    # The bench answers every message with fresh readings; without one the message went
    # nowhere (a real board, or a device id make sim does not simulate).
    before = c.readings_count
    if a.what == "ev":
        fields = dict(a.fields)
        c.ev(**fields)
        said = " ".join("%s=%s" % (k, json.dumps(v)) for k, v in fields.items())
    elif a.what == "fault":
        c.fault(a.fault)
        said = a.fault
    elif a.what == "meter":
        c.meter(a.meter, a.fault)
        said = "%s %s" % (a.meter, a.fault)
    else:
        c.power(a.state == "on")
        said = a.state
    try:
        c.wait(lambda: c.readings_count > before, BENCH_ANSWER_S)
        if a.what == "meter" and a.meter in (c.readings.get("meters") or {}):
            # The next readings may predate the message: the one that shows it.
            c.wait(lambda: c.readings["meters"][a.meter]["fault"] == a.fault, BENCH_ANSWER_S)
    except TimeoutError:
        raise Unreachable("no bench answered for %s on %s: bench commands reach make sim "
                          "only (check --device-id)" % (c.device_id, c.address))
    if a.what == "meter" and a.meter not in (c.readings.get("meters") or {}):
        print("evctl: the bench of %s has no %s meter (make sim --%s-meter MODEL)"
              % (c.device_id, a.meter, a.meter), file=sys.stderr)
        return REFUSED
    print("bench %s: %s %s" % (c.device_id, a.what, said))
    return 0


def _run_status(c, a):
    reply = _reply(c, a, "read", {})
    if not reply.get("success"):
        return REFUSED
    print(status_screen(c.device_id, c.address, reply.get("data") or {}, c.readings))
    return 0


def _run_watch(c, a):
    if a.raw:
        c.on_message = lambda topic, text: print(topic, text, flush=True)
    else:
        line = WatchLine(c.device_id)
        c.on_message = lambda topic, text: line.update(topic[len(c.base):], text)
        if c.states:  # the retained state that came with the subscription
            line.update(topics.STATE, json.dumps(c.states[-1]))
    while True:
        time.sleep(1)


def _release(a):
    """{manifest, signature} of the release file: --release, else URL.ota.json. ValueError
    for a file that is not there or not a release file (a bad argument), Unreachable where
    the server cannot give it."""
    where = a.release or a.url + ".ota.json"
    try:
        if a.release:
            with open(a.release, "rb") as f:
                text = f.read(RELEASE_BYTES + 1)
        else:
            with urllib.request.urlopen(where, timeout=a.timeout) as r:
                text = r.read(RELEASE_BYTES + 1)
    except OSError as e:
        if a.release:
            raise ValueError("cannot read the release file %s: %s" % (where, e))
        raise Unreachable("cannot fetch the release file %s: %s (or give --release FILE)"
                          % (where, e))
    try:
        body = loads(text) if len(text) <= RELEASE_BYTES else None
    except ValueError:
        body = None
    if not isinstance(body, dict) or not all(isinstance(body.get(k), str)
                                             for k in ("manifest", "signature")):
        raise ValueError("%s is not a release file (python -m tools.ota sign writes one)"
                         % where)
    return {"manifest": body["manifest"], "signature": body["signature"]}


def _run_update(c, a):
    try:
        release = _release(a)
    except ValueError as e:
        return _fail(USAGE, e)
    body = dict(release, url=a.url,
                duringSession="refuse" if a.refuse_during_session else "wait")
    seen = len(c.events)
    reply = _reply(c, a, "update", body)
    if not reply.get("success"):
        return REFUSED
    data = reply.get("data") or {}
    version = data.get("version")
    print("update: %s accepted (%s)" % (version, data.get("state")), flush=True)
    if a.no_follow:
        return 0
    return _follow(c, a, version, seen)


def _follow(c, a, version, seen):
    # The update's events as they come, until its outcome: failed or rolled back (1), or
    # valid (0: the device read says so once the new version has run its trial).
    availability = c.availability
    installed = False
    while True:
        with c.cond:
            c.cond.wait(1)
            new, seen = c.events[seen:], len(c.events)
        if c.availability != availability:
            availability = c.availability
            print("%s %s is %s" % (_clock(_now_iso()), c.device_id, availability), flush=True)
        for event in new:
            kind = str(event.get("type"))
            if not kind.startswith("update.") or (event.get("data") or {}).get(
                    "version") != version:
                continue
            print("%s %s" % (_clock(event.get("timestamp")), _event_text(event)), flush=True)
            if kind in ("update.failed", "update.rolled_back"):
                return REFUSED
            installed = installed or kind == "update.installed"
        if installed and availability == "online":
            try:
                update = c.read().get("update") or {}
            except TimeoutError:
                continue
            if update.get("version") == version and update.get("state") == "valid":
                print("update: %s is valid" % version)
                return 0
            time.sleep(FOLLOW_READ_S)


def _now_iso():
    return datetime.datetime.now().strftime("%Y-%m-%dT%H:%M:%S")


RUN = {"read": _run_read, "cap": _run_cap, "limit": _run_limit, "phases": _run_phases,
       "charge": _run_command, "idle": _run_command, "ev": _run_bench, "fault": _run_bench,
       "power": _run_bench, "meter": _run_bench,
       "status": _run_status, "watch": _run_watch, "update": _run_update}


# -- for people: rounded values, one screen, one line per change


def _num(x, digits=2):
    """7.4 -> "7.4", 32.0 -> "32", 0.12345 -> "0.12"; None -> "-"."""
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return ("%.*f" % (digits, x)).rstrip("0").rstrip(".")


def _clock(iso):
    return iso[11:19] if isinstance(iso, str) and len(iso) >= 19 else "--:--:--"


def _event_text(event):
    if not isinstance(event, dict):
        return str(event)
    data = event.get("data") or {}
    detail = [str(data[k]) for k in ("actionId", "fault", "sessionId", "reason") if data.get(k)]
    if data.get("phases"):
        detail.append("%s phase(s)" % data["phases"])
    if data.get("energy") is not None:
        detail.append("%s kWh" % _num(data["energy"]))
    return " ".join([str(event.get("type"))] + detail)


def _summary(read):
    """The few values a person looks at first, from a device read."""
    state = read.get("state") or {}
    cap = (read.get("settings") or {}).get("max_charge_rate") or {}
    return {"status": state.get("status"), "power": state.get("currentPower"),
            "cap": cap.get("value"), "limit": state.get("limitedBy"),
            "offered": state.get("offeredCurrent"), "energy": state.get("sessionEnergy"),
            "fault": state.get("fault")}


def _limits_text(limits):
    parts = []
    dynamic = limits.get("dynamic")
    if dynamic:
        parts.append("dynamic %s %s from %s until %s" % (
            _num(dynamic.get("value")), (dynamic.get("unit") or "").upper() or "?",
            dynamic.get("source") or "?", _clock(dynamic.get("expiresAt"))))
    if limits.get("failsafe"):
        parts.append("failsafe (the dynamic limit expired)")
    if limits.get("site"):
        parts.append("site %s" % json.dumps(limits["site"]))
    if limits.get("effectiveCurrent") is not None:
        parts.append("%s A allowed" % _num(limits["effectiveCurrent"], 1))
    return ", ".join(parts) or "-"


def _phases_text(state):
    switch = state.get("phaseSwitch")
    if not switch:
        return ""
    return ", %s in use (phases_mode %s%s)" % (
        state.get("phasesInUse"), switch.get("mode"),
        ", switching to %s" % switch.get("wanted") if switch.get("switching") else "")


def _firmware_text(read):
    """The running version and the last update's outcome (docs/ota.md)."""
    text = str((read.get("metadata") or {}).get("firmware") or "-")
    u = read.get("update") or {}
    state = u.get("state")
    if state == "trial":
        text += " on trial (updated from %s; valid after 60 s running and its uplink "\
            "reached)" % u.get("previous")
    elif state == "valid":
        text += " (updated from %s)" % u.get("previous")
    elif state == "rolled_back":
        text += " (the update to %s was rolled back: %s)" % (u.get("version"), u.get("reason"))
    job = u.get("job")
    if job:
        text += "; updating to %s: %s" % (job.get("version"), job.get("state"))
    failure = u.get("lastFailure")
    if failure:
        text += "; the update to %s failed: %s" % (failure.get("version"), failure.get("reason"))
    return text


def status_screen(device_id, address, read, readings=None):
    s = _summary(read)
    state = read.get("state") or {}
    settings = read.get("settings") or {}
    value = lambda key: (settings.get(key) or {}).get("value")  # noqa: E731
    status = s["status"] or "-"
    if s["fault"]:
        status += ", fault " + s["fault"]
    most = (settings.get("max_charge_rate") or {}).get("effectiveMax")
    rows = [
        ("status", "%s (pilot %s, contactor %s)" % (status, state.get("pilot", "-"),
                                                    state.get("contactor", "-"))),
        ("power", "%s kW now, %s A offered, %s kWh this session" % (
            _num(s["power"]), _num(s["offered"], 1), _num(s["energy"]))),
        ("cap", "%s kW (max_charge_rate)%s; limited by %s" % (
            _num(s["cap"]), ", the installation delivers at most %s kW" % _num(most)
            if most is not None else "", s["limit"] or "-")),
        ("limits", _limits_text(state.get("limits") or {})),
        ("installation", "%s A max, %s V x %s phase(s)%s" % (
            _num(value("max_current")), _num(value("supply_voltage")), _num(value("phases")),
            _phases_text(state))),
    ]
    rows.append(("firmware", _firmware_text(read)))
    action = read.get("lastAction")
    rows.append(("last action", "%s %s: %s at %s" % (
        action.get("command"), action.get("id"), action.get("state"),
        _clock(action.get("updatedAt"))) if action else "none"))
    for role, m in sorted((read.get("meters") or {}).items()):
        rows.append(("%s meter" % role, meter_text(m)))
    changes = ((read.get("diagnostics") or {}).get("transitions") or [])[-3:]
    rows.append(("recent", "; ".join("%s %s -> %s (%s)" % (
        _clock(t.get("at")), t.get("from") or "-", t.get("to"), t.get("cause"))
        for t in changes) or "-"))
    if readings:
        pilot = readings.get("pilot") or {}
        rows.append(("bench", "pilot %s at %s %%, contactor %s, %s A" % (
            pilot.get("state"), _num(pilot.get("dutyPercent")), readings.get("contactor"),
            _num(readings.get("current"), 1))))
    width = max(len(k) for k, _ in rows)
    head = "%s on %s: online" % (device_id, address)
    return "\n".join([head] + ["  %-*s  %s" % (width, k, v) for k, v in rows])


def meter_text(m):
    """A Modbus meter of the device read (docs/meters.md) on one line."""
    counts = m.get("counts") or {}
    bad = ", ".join("%s %s" % (k, v) for k, v in counts.items() if k != "ok" and v)
    text = "%s at %s: %s" % (m.get("model"), m.get("address"), m.get("status"))
    if m.get("currents") is not None:
        text += ", %s A, %s W, %s kWh (%s ms old)" % (
            " / ".join(_num(c, 1) for c in m["currents"]), m.get("powerW"),
            _num((m.get("energyWh") or 0) / 1000, 1), m.get("ageMs"))
    text += "; %s good reads" % counts.get("ok", 0)
    if bad:
        text += ", %s (last %s)" % (bad, m.get("lastError"))
    return text


class WatchLine:
    """Prints one line whenever what a person would look at changes, or an event arrives."""

    def __init__(self, device_id, out=None):
        self.device_id = device_id
        self.out = out or sys.stdout
        self.shown = None
        self.summary = None
        self.event = "-"

    def update(self, kind, text):
        if kind == topics.AVAILABILITY:
            self._print("%s is %s" % (self.device_id, text))
            self.shown = None  # after a restart, show its state again even if unchanged
            return
        try:
            body = loads(text)
        except ValueError:
            return
        if kind == topics.STATE and isinstance(body, dict):
            self.summary = _summary(body.get("data") or {})
        elif kind == topics.EVENTS:
            self.event = _event_text(body)
            self.shown = None  # an event is a change of its own
        else:
            return
        if self.summary is None:
            return
        s = self.summary
        line = ("%-12s %6s kW  cap %s kW, limited by %s  offered %s A  session %s kWh%s  | %s"
                % (s["status"], _num(s["power"]), _num(s["cap"]), s["limit"] or "-",
                   _num(s["offered"], 1), _num(s["energy"]),
                   "  fault " + s["fault"] if s["fault"] else "", self.event))
        if line != self.shown:
            self.shown = line
            self._print(line)

    def _print(self, text):
        now = datetime.datetime.now().strftime("%H:%M:%S")
        print("%s %s" % (now, text), file=self.out, flush=True)


if __name__ == "__main__":
    sys.exit(main())
