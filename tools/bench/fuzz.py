"""A seeded, bounded scenario fuzzer in bench time: the test that hunts for the next defect.

`generate(seed)` turns a seed into a scenario: an installation and a timeline of what a
vehicle, the bench's faults, a home energy manager (cap writes), a controller (dynamic limits
it renews, clears, or lets run out into the failsafe, and failsafe writes), a cloud (commands,
with repeated and replacing action ids), a person at the reset button and the mains (power
cuts) do to the charger, each at its own random rate, up to one per tick; some seeds add an
OCPP central system with its charging profiles (ocpp_fuzz.py), and on an installation that
switches between one phase and three, phases_mode writes and the second contactor's faults.
Sites of several chargers are site_fuzz.py's. `run()` plays it on a rig (firmware under
CPython or under the micropython binary) and feeds every tick to the invariant checker
(tools/bench/invariants.py) and, where the installation switches, to the switch's
(tools/bench/phase_invariants.py); a broken invariant raises with the command that replays
it. `shrink()` looks for a shorter timeline that still breaks it.

    make fuzz                          # many seeds, both interpreters, a summary
    make fuzz SEED=123 INTERP=micropython [ARGS="--keep 1,4,9 --until 42000"]
"""
import argparse
import math
import os
import random
import sys
import tempfile
import time
import traceback

from .invariants import API, CAP, FAILSAFE, Checker, Obs, Violation
from .ocpp_fuzz import OcppFuzz
from .phase_invariants import PhaseChecker, PhaseViolation
from .rig import TICK_MS, InProcessRig, ProcessRig
import meter_poll  # the firmware's, as topics: .rig put them on the path
import topics

DRAIN_MS = 15000  # quiet end: every action ends within 12 s of its start or restart
INTERPRETERS = ("cpython", "micropython")
FAULTS = {"pilot_short": 3, "diode_short": 2, "overcurrent": 3, "contactor_stuck_open": 1,
          "contactor_weld": 1.5, "rcd_trip": 1}  # relative weights; weld and RCD latch
# Where the installation switches phases: the second contactor's faults (a weld latches)
# and the mode's values (settings.MODES).
PHASE_FAULTS = {"phase_contactor_stuck_open": 2, "phase_contactor_weld": 1, "none": 3}
PHASES_MODES = (1, 3, "auto")
VEHICLE_AMPS = (6, 10, 13, 16, 20, 32, 48, 63, 80)
INSTALL_AMPS = (6, 10, 13, 16, 20, 25, 32, 40, 48, 63, 80)
CABLE_AMPS = (13, 20, 32, 63)
TYPICAL_KW = (0, 1.0, 1.38, 1.4, 3.68, 3.7, 4.14, 7.36, 7.4, 11, 22, 50)
INVALID_CAPS = (-1, -0.001, 50.001, 99, "7.4", None, True)
FAILSAFE_KW = (0, 0, 1.38, 1.4, 3.7, 4.14, 7.4, 11, 22)
TTL_S = (1, 1, 2, 3, 5, 10, 10, 30, 60, 1.5, 0.5, 3601)  # 0.5 and 3601: refused
REACTION_MS = (0, 10, 10, 20, 30, 50, 100, 300, 1000)
# A Modbus EV meter instead of the S0 meter (docs/meters.md), and its faults: the bench's
# pymodbus meter (a silent one costs a response time of real time per poll: rarer).
EV_METERS = {1: ("SDM120", "SDM630", "B23", "EM340", "SDM72D-M-2"),
             3: ("SDM630", "B23", "EM340", "SDM72D-M-2")}
METER_FAULT_WEIGHTS = {"crc": 2, "exception": 2, "address": 1, "silent": 1}
# A repeated action id is one the agent promises to recognise (design.md): among its last
# 16 actions while running, its last 2 after a restart. The generator counts every command
# it sends as an action (refused ones too), so it stays inside that window.
REPEAT_WINDOW = 16
REPEAT_AFTER_RESTART = 2
CRASH = "the firmware keeps running"
PHASE_SWITCH = "the switch between one phase and three: "  # + phase_invariants' name


class Step:
    __slots__ = ("t", "kind", "args", "who")

    def __init__(self, t, kind, args=None):
        self.t = t
        self.kind = kind
        self.args = args
        self.who = None  # on a site: the charger it is done to (None: the site's own)

    def __repr__(self):
        a = self.args
        if self.kind == "ev":
            return "ev " + " ".join("%s=%s" % kv for kv in sorted(a.items()))
        if self.kind == "cap":
            return "cap %r kW" % (a,)
        if self.kind == "cmd":
            name, action_id, strategy = a
            return "%s%s%s" % (name, " id=" + action_id if action_id else "",
                               " cancel_and_replace" if strategy else "")
        if self.kind == "fault":
            return "fault " + a
        if self.kind == "limit":
            return "limit cleared" if a is None else "limit %r %r ttl %r s" % a
        if self.kind == "failsafe":
            return "failsafe %r kW" % (a,)
        if self.kind == "phases":
            return "phases_mode %r" % (a,)
        if self.kind == "meter":
            return "EV meter " + a
        if self.kind in ("reset", "cut", "boot"):
            return {"reset": "factory reset", "cut": "power cut", "boot": "power on"}[self.kind]
        return "%s %r" % (self.kind, a)  # a site's own (site_fuzz.py)


class Scenario:
    def __init__(self, seed, install, length_ms, steps, ocpp=False):
        self.seed = seed
        self.install = install  # make_rig keywords
        self.length_ms = length_ms
        self.steps = steps  # sorted by t; the index is a step's name for --keep
        self.ocpp = ocpp  # an OCPP station too, on the in-process rig (ocpp_fuzz.py)

    def describe(self):
        i = self.install
        return "seed %d: %s V x %d, max %d A%s%s%s, %d s, %d steps" % (
            self.seed, i["voltage"], i["phases"], i["max_current"],
            ", cable %d A" % i["cable_current"] if i.get("cable_current") else "",
            ", default %s kW" % i["default_kw"] if "default_kw" in i else "",
            ", no meter" if i.get("metered") is False else
            ", Modbus EV meter %s" % i["meters"]["ev"] if "meters" in i else "",
            self.length_ms // 1000, len(self.steps)) + (", OCPP" if self.ocpp else "") + (
            ", phase switch" if i.get("phase_switch") else "")


# -- the generator
class _Gen:
    """One scenario's random source, its timeline so far, and how its world behaves."""

    def __init__(self, seed):
        self.r = random.Random(seed)
        self.steps = []
        self.ids = 0
        self.recent_ids = []  # ids of the last REPEAT_WINDOW commands (None: not repeatable)
        self.plug_ins = []  # bench ms of each plug-in: storms follow some of them

    def logu(self, lo, hi):
        return math.exp(self.r.uniform(math.log(lo), math.log(hi)))

    def rate(self, p_off, lo, hi):
        """Events per second for one kind of input: off, or log-uniform in [lo, hi]."""
        return 0.0 if self.r.random() < p_off else self.logu(lo, hi)

    def times(self, per_s, start, end):
        t = start
        while per_s > 0:
            t += self.r.expovariate(per_s) * 1000
            if t >= end:
                return
            yield t

    def add(self, t, kind, args=None):
        self.steps.append(Step(int(t) // TICK_MS * TICK_MS, kind, args))

    def pick(self, weights):
        return self.r.choices(list(weights), list(weights.values()))[0]

    def behaviour(self):
        r = self.r
        self.react = {k: 0.0 if r.random() < 0.5 else r.uniform(0.3, 1.0)
                      for k in ("plug", "boot", "clear", "fault")}
        self.p_idle = r.uniform(0.2, 0.8)
        self.p_replace = r.choice((0, 0.3, 0.7, 1.0))
        self.p_auto, self.p_repeat = r.uniform(0, 0.4), r.choice((0, 0.1, 0.3))
        self.p_cut_after_cmd = 0.0 if r.random() < 0.7 else r.uniform(0.01, 0.1)
        self.p_asleep, self.p_disobey = r.choice((0, 0.1, 0.5)), r.choice((0, 0.15, 0.5))

    def command(self, t, name=None):
        r = self.r
        name = name or ("idle" if r.random() < self.p_idle else "charge")
        strategy = "cancel_and_replace" if r.random() < self.p_replace else None
        x = r.random()
        how = "auto" if x < self.p_auto else "repeat" if x < self.p_auto + self.p_repeat \
            else "new"
        self.add(t, "cmd", (name, how, strategy))
        if r.random() < self.p_cut_after_cmd:
            self.add(t + r.choice((0, 10, 20, 50, 100, 200)), "cut")
            self.add(t + r.choice((0, 10, 20, 50, 100, 200)) + self.logu(10, 5000), "boot")

    def react_to(self, kind, t, p_idle=0.75):
        # A home energy manager or a cloud that answers a plug-in, a boot or a cleared
        # fault with a command (mostly idle), or a user who presses charge when the car
        # stops on a fault; at once or a little later.
        if self.r.random() < self.react[kind]:
            self.command(t + self.r.choice(REACTION_MS),
                         "idle" if self.r.random() < p_idle else "charge")

    def action_ids(self, steps):
        # Given in time order, once the timeline is sorted: "repeat" picks an id of the
        # last commands before it, inside the window the agent promises.
        for s in steps:
            if s.kind == "cut":
                self.recent_ids = self.recent_ids[-REPEAT_AFTER_RESTART:]
            if s.kind != "cmd":
                continue
            name, how, strategy = s.args
            mine = [a for a in self.recent_ids if a]
            aid = None
            if how == "repeat" and mine:
                s.args = (name, self.r.choice(mine), strategy)
            else:
                if how != "auto":
                    self.ids += 1
                    aid = "a%d" % self.ids
                s.args = (name, aid, strategy)
            # Every command takes a place: a repeat of an id first refused (409) is new.
            self.recent_ids = (self.recent_ids + [aid])[-REPEAT_WINDOW:]


def generate(seed):
    g = _Gen(seed)
    r = g.r
    voltage = r.randint(220, 240) if r.random() < 0.85 else round(r.uniform(220, 240), 1)
    install = {"voltage": voltage, "phases": 1 if r.random() < 0.7 else 3,
               "max_current": r.choice(INSTALL_AMPS)}
    if r.random() < 0.3:
        install["cable_current"] = r.choice(CABLE_AMPS)
    if r.random() < 0.2:
        install["default_kw"] = r.choice((0, 1.0, 3.7, 7.4, 11, 22))
    x = r.random()
    length = int(r.uniform(5, 30) if x < 0.4 else r.uniform(30, 90) if x < 0.8 else
                 r.uniform(90, 180)) * 1000
    g.behaviour()
    _vehicle(g, length)
    _faults(g, length)
    _caps(g, length, install)
    _commands(g, length)
    _mains(g, length)
    # One phase or three, from a stream of its own like OCPP's below.
    if install["phases"] == 3:
        _phases(g, random.Random(seed * 7919 + 17), length, install)
    # The controller's from a stream of its own, so a seed's other steps are what they were;
    # but a third of the seeds are calm (no bench faults), so that its ceilings are met
    # while a car charges, not only while the pilot shows F.
    ctl_gen = _Gen(seed * 7919 + 19)
    if ctl_gen.r.random() < 0.35:
        g.steps = [s for s in g.steps if s.kind != "fault"]
    _controller(ctl_gen, length, install, g.plug_ins, g.steps)
    steps = sorted(g.steps, key=lambda s: s.t)  # stable: same-tick steps keep their order
    g.action_ids(steps)
    if r.random() < 0.2:
        install["metered"] = False  # a board without a meter: the current is unknown
    else:
        steps = _modbus_meter(seed, install, length, steps)
    ocpp = random.Random(seed * 7919 + 16).random() < 0.3
    return Scenario(seed, install, length, steps, ocpp)


def _modbus_meter(seed, install, length, steps):
    # A quarter of the metered boards read a Modbus EV meter, which faults now and then
    # (each episode ends with "none"). From a stream of its own, so a seed's other steps
    # are what they always were.
    g = _Gen(seed * 7919 + 28)
    if g.r.random() >= 0.25:
        return steps
    install["meters"] = {"ev": g.r.choice(EV_METERS[install["phases"]])}
    free = 0
    for t in g.times(g.rate(0.3, 0.01, 0.5), 0, length):
        if t < free:
            continue
        g.add(t, "meter", g.pick(METER_FAULT_WEIGHTS))
        free = t + g.logu(300, 20000)
        g.add(free, "meter", "none")
    return sorted(steps + g.steps, key=lambda s: s.t)


def _controller(g, length, install, plug_ins, out):
    # evcc, a Home Assistant automation or a balancer elsewhere: sessions of dynamic limits,
    # each renewed at its own pace, mostly inside the ttl; a session ends with a clear or
    # silence (the failsafe after the ttl). Most begin a little after a car is plugged in,
    # as a controller's do. The installer's failsafe is written now and then.
    r = g.r
    top = install["max_current"]
    per_amp = install["voltage"] * install["phases"] / 1000
    starts = list(g.times(g.rate(0.5, 1 / 90, 1 / 10), 0, length))
    p_plug = 0.0 if r.random() < 0.3 else r.uniform(0.5, 1.0)
    starts += [t + g.logu(500, 8000) for t in plug_ins if r.random() < p_plug]
    for start in starts:
        ttl = r.choice(TTL_S)
        every = ttl * r.choice((0.3, 0.5, 0.9, 1.2)) * 1000 if r.random() < 0.8 else 50
        n = int(g.logu(1, 60))
        t = start
        for _ in range(n):
            x = r.random()
            if x < 0.6:
                value, unit = round(r.uniform(0, top), r.choice((0, 1, 1, 2))), "a"
            elif x < 0.8:
                value, unit = round(r.uniform(0, top * per_amp), r.choice((1, 2, 3))), "kw"
            elif x < 0.9:
                value, unit = r.choice((6, 6.0, 5.9, 16, 32)), r.choice(("A", "kW", "a"))
            else:  # refused: above the installation, negative, or an unknown unit
                value, unit = r.choice(((top + 0.1, "a"), (-1, "a"), (50.5, "kw"), (10, "w")))
            g.add(t, "limit", (value, unit, ttl))
            t += max(TICK_MS, every * r.uniform(0.8, 1.1))
            if t >= length:
                break
        if r.random() < 0.5:
            g.add(t, "limit", None)  # goodbye; otherwise silence, and the failsafe
    for t in g.times(g.rate(0.6, 1 / 120, 1 / 10), 0, length):
        g.add(t, "failsafe", r.choice(FAILSAFE_KW) if r.random() < 0.8 else
              r.choice((round(r.uniform(0, 11), 2), -1, 50.5)))
    out.extend(g.steps)


def valid_limit(value, unit, ttl, max_current):
    """Whether a `limit` request must be accepted (protocol.md, the dynamic limit)."""
    if value is None:
        return True
    if type(unit) is not str or unit.lower() not in ("a", "kw"):
        return False
    top = max_current if unit.lower() == "a" else 50
    return type(value) in (int, float) and 0 <= value <= top and 1 <= ttl <= 3600


def _vehicle(g, length):
    # Plugged in and out, each plug-in a fresh car; then each of its whims at its own rate.
    r = g.r
    mean_in, mean_out = g.logu(200, 300000), g.logu(10, 10000)
    t = g.logu(10, 5000) if r.random() < 0.9 else length
    plugged = False
    while t < length:
        if plugged:
            g.add(t, "ev", {"connected": False})
            t += max(TICK_MS, r.expovariate(1 / mean_out))
        else:
            g.add(t, "ev", {"connected": True, "request": r.random() < 0.85,
                            "maxCurrent": r.choice(VEHICLE_AMPS), "ventilation": False,
                            "asleep": r.random() < g.p_asleep,
                            "obeysPilot": r.random() >= g.p_disobey})
            g.react_to("plug", t)
            g.plug_ins.append(t)
            t += max(TICK_MS, r.expovariate(1 / mean_in))
        plugged = not plugged
    for t in g.times(g.rate(0.4, 0.02, 100), 0, length):  # B/C flapping
        g.add(t, "ev", {"request": r.random() < 0.6})
    for t in g.times(g.rate(0.6, 0.01, 50), 0, length):
        g.add(t, "ev", {"maxCurrent": r.choice(VEHICLE_AMPS)})
    for t in g.times(g.rate(0.7, 0.005, 5), 0, length):
        g.add(t, "ev", {"ventilation": True})
        g.add(t + g.logu(10, 20000), "ev", {"ventilation": False})
    for t in g.times(g.rate(0.8, 0.005, 0.5), 0, length):
        g.add(t, "ev", {"asleep": True})
    for t in g.times(g.rate(0.6, 0.005, 5), 0, length):
        g.add(t, "ev", {"obeysPilot": r.random() < 0.5})


def _faults(g, length):
    # A chain of bench states, each lasting until the next event; half the time a fault
    # follows a fault, and a weld is often followed by an RCD trip (the fault current).
    r = g.r
    fault = "none"
    for t in g.times(g.rate(0.3, 0.005, 20), 0, length):
        if fault != "none" and r.random() < 0.5:
            fault = "none"
            g.react_to("clear", t)
        elif fault == "contactor_weld" and r.random() < 0.5:
            fault = "rcd_trip"
        elif fault != "none":
            fault = r.choice([f for f in FAULTS if f != fault])
        else:
            fault = g.pick(FAULTS)
            g.react_to("fault", t, p_idle=0.25)
        g.add(t, "fault", fault)


def _caps(g, length, install):
    # Cap writes in bursts, each burst in one style, mostly where the cap binds: between
    # the 6 A edge and the installation's own limit.
    r = g.r
    per_amp = install["voltage"] * install["phases"] / 1000  # kW per A
    amps = min(install["max_current"], install.get("cable_current") or 80)
    site = {"per_amp": per_amp, "edge_kw": 6 * per_amp, "full_kw": amps * per_amp,
            "amps": amps}
    styles = {"random": 3, "flap": 2, "edge": 2, "low": 1, "typical": 2, "invalid": 0.3}
    bursts = [(t, int(g.logu(1, 200)), r.choice((10, 10, 10, 20, 50, 100, 300, 1000, 3000)),
               styles) for t in g.times(g.rate(0.3, 1 / 120, 2), 0, length)]
    # Storms: a new duty every tick for seconds (300 writes/s over MQTT), from an energy
    # manager that starts balancing a few seconds after a car is plugged in.
    p_storm = 0.0 if r.random() < 0.7 else r.uniform(0.3, 1.0)
    for plugged in g.plug_ins:
        if r.random() < p_storm:
            bursts.append((plugged + g.logu(1500, 8000), int(g.logu(100, 500)), TICK_MS,
                           {"flap": 2, "random": 1}))
    for t, n, gap, weights in bursts:
        style = g.pick(weights)
        lo, hi = site["edge_kw"] * 1.05, max(site["edge_kw"] * 1.1, min(25, site["full_kw"]))
        flap = [round(r.uniform(lo, hi), r.choice((1, 2))) for _ in range(2)]
        for k in range(n):
            if t + k * gap >= length:
                break
            g.add(t + k * gap, "cap", _cap_value(g, style, flap, k, site))


def _commands(g, length):
    # charge / idle in bursts; toggling bursts alternate them.
    r = g.r
    bursts = [(t, int(g.logu(1, 100)), r.choice((10, 10, 20, 50, 100, 500, 2000)))
              for t in g.times(g.rate(0.3, 1 / 120, 2), 0, length)]
    p_storm = 0.0 if r.random() < 0.85 else r.uniform(0.3, 1.0)
    for plugged in g.plug_ins:  # a command every tick for seconds, once a car charges
        if r.random() < p_storm:
            bursts.append((plugged + g.logu(1500, 8000), int(g.logu(50, 300)), TICK_MS))
    for t, n, gap in bursts:
        toggle = r.random() < 0.3
        for k in range(n):
            if t + k * gap >= length:
                break
            g.command(t + k * gap, ("idle", "charge")[k % 2] if toggle else None)


def _mains(g, length):
    # The reset button and the power: cuts of 10 ms to 5 s.
    for t in g.times(g.rate(0.75, 1 / 120, 1), 0, length):
        g.add(t, "reset")
    for t in g.times(g.rate(0.6, 1 / 120, 0.5), 0, length):
        g.add(t, "cut")
        back = t + g.logu(10, 5000)
        g.add(back, "boot")
        g.react_to("boot", back)


def _phases(g, r, length, install):
    # Half the three-phase installations have a second contactor: phases_mode written by a
    # person, Home Assistant or evcc (often around a switch's minimum interval), and the
    # second contactor's faults, each a bench state until the next.
    if r.random() < 0.5:
        return
    install["phase_switch"] = True
    t = 0.0
    per_s = g.logu(1 / 120, 1 / 5)
    while True:
        t += r.expovariate(per_s) * 1000
        if t >= length:
            break
        g.add(t, "phases", r.choice(PHASES_MODES))
    t = 0.0
    per_s = 0.0 if r.random() < 0.4 else g.logu(1 / 180, 1 / 20)
    while per_s:
        t += r.expovariate(per_s) * 1000
        if t >= length:
            break
        g.add(t, "fault", r.choices(list(PHASE_FAULTS), list(PHASE_FAULTS.values()))[0])


def _cap_value(g, style, flap, k, site):
    r = g.r
    if style == "flap":  # alternating: a duty change every write
        return flap[k % 2]
    if style == "edge":  # just around a 0.1 A step, often the 6 A one
        amps = 6.0 if r.random() < 0.5 else r.randint(60, max(60, site["amps"] * 10)) / 10
        kw = amps * site["per_amp"] + r.choice((-0.0004, -0.0001, 0, 0.0001))
        return min(50, max(0, round(kw, 4)))
    if style == "low":
        return round(r.uniform(0, site["edge_kw"]), r.choice((1, 2, 3)))
    if style == "typical":
        return r.choice(TYPICAL_KW)
    if style == "invalid" and r.random() < 0.5:
        return r.choice(INVALID_CAPS)
    top = 50 if r.random() < 0.5 else min(50, 1.25 * site["full_kw"])
    return round(r.uniform(0, top), r.choice((0, 1, 1, 2, 2, 3)))


def valid_cap(value):
    return type(value) in (int, float) and 0 <= value <= 50


# -- playing a scenario
def replay_command(seed, interp, keep=None, until=None, site=False):
    cmd = "make fuzz SEED=%d INTERP=%s" % (seed, interp)
    extra = ["--site"] if site else []
    if keep is not None:
        extra.append("--keep " + (",".join(str(i) for i in keep) or "none"))
    if until is not None:
        extra.append("--until %d" % until)
    return cmd + (' ARGS="%s"' % " ".join(extra) if extra else "")


def run(scenario, make_rig, interp, keep=None, until=None):
    """Play the scenario (only the steps in `keep`, up to `until` ms, when given) and check
    every tick; returns the bench ms played. Raises Violation with its replay command."""
    length = scenario.length_ms if until is None else min(until, scenario.length_ms)
    steps = [s for i, s in enumerate(scenario.steps)
             if (keep is None or i in keep) and s.t < length]
    inst = scenario.install
    # Where the installation switches, a power ceiling's current per phase depends on the
    # phases in use: the checker holds the offer to the one-phase conversion (the loosest)
    # and the switch's checker judges the power on the phases the bench really connects.
    checker = Checker(inst["voltage"], 1 if inst.get("phase_switch") else inst["phases"],
                      inst["max_current"], inst.get("cable_current"),
                      inst.get("default_kw", 50), inst.get("metered", True),
                      meter_poll.PERIOD_MS if "meters" in inst else 0)
    phases = None
    if inst.get("phase_switch"):
        phases = PhaseChecker(inst["voltage"])
        phases.note_power_ceiling(inst.get("default_kw", 50) * 1000, 0)
    rig = make_rig(**inst)
    ocpp = None
    if scenario.ocpp and interp == "cpython":  # the station needs the firmware in process
        busy = [s.t for s in steps if s.kind in ("cap", "limit", "failsafe", "reset")]
        ocpp = OcppFuzz(scenario.seed, length, checker, busy)
        ocpp.attach(rig)
    try:
        _play(rig, checker, steps, length, ocpp, phases)
        checker.finish(rig.bench.t)
        if ocpp:
            ocpp.finish(rig.bench.t)
        return rig.bench.t
    except Violation as v:
        v.replay = replay_command(scenario.seed, interp, keep, until)
        raise
    except PhaseViolation as p:
        v = Violation(PHASE_SWITCH + p.invariant, p.t, str(p), checker.history(p.t))
        v.replay = replay_command(scenario.seed, interp, keep, until)
        raise v from p
    except Exception as e:  # a crash of the firmware (or the link to it) is a finding too
        v = Violation(CRASH, rig.bench.t, "%s\n%s" % (
            repr(e), "".join(traceback.format_exception(e)[-4:])),
            checker.history(rig.bench.t))
        v.replay = replay_command(scenario.seed, interp, keep, until)
        raise v from e
    finally:
        rig.close()


def _play(rig, checker, steps, length, ocpp=None, phases=None):
    bench = rig.bench
    state = {"powered": True, "seen": 0, "ocpp": ocpp, "phases": phases}
    events = rig.prefix + topics.EVENTS
    plain_step = rig.step

    def step():  # every tick the rig makes, scenario or request, goes through the checker
        plain_step()
        obs = Obs.of(bench, state["powered"])
        checker.observe(obs)
        if phases:
            phases.observe(bench, state["powered"])
        if ocpp:
            ocpp.tick(obs)
        published = rig.published
        while state["seen"] < len(published):
            topic, payload, _ = published[state["seen"]]
            state["seen"] += 1
            if topic == events and isinstance(payload, dict):
                checker.event(payload, bench.t)

    rig.step = step
    n = 0
    for s in steps:
        while bench.t < s.t:
            step()
        n += 1
        _apply(rig, checker, state, s, n)
    while bench.t < length:
        step()
    if not state["powered"]:
        _apply(rig, checker, state, Step(bench.t, "boot"), n)
    rig.run(DRAIN_MS)  # no inputs, no power cut: every action must end now


def _apply(rig, checker, state, s, n):
    t = rig.bench.t
    note = checker.note(t, repr(s))
    kind, args = s.kind, s.args
    phases = state["phases"]
    if kind == "ev":
        rig.ev(**args)
    elif kind == "fault":
        rig.fault(args)
    elif kind == "meter":
        rig.bench.set_meter_fault("ev", args)
        checker.meter_fault(args, t)
    elif kind == "cut":
        if state["powered"]:
            rig.power_cut()
            state["powered"] = False
            checker.power(False, t)
            if phases:
                phases.power_off(t)
            if state["ocpp"]:
                state["ocpp"].power_cut()
    elif kind == "boot":
        if not state["powered"]:
            rig.boot()
            state["powered"] = True
            checker.power(True, t)
            if state["ocpp"]:
                state["ocpp"].attach(rig)
    elif not state["powered"]:
        note[1] += " (not sent: no power)"
    elif kind == "cap":
        valid = valid_cap(args)
        checker.cap_sent(args, valid)
        if valid and phases:
            phases.power_ceiling_sent(args * 1000)
        reply = rig.request("settings", {"requestId": "f%d" % n,
                                         "settings": {CAP: {"value": args, "unit": "kw"}}})
        note[1] += " -> %s" % reply.get("meta", {}).get("status")
        checker.cap_reply(rig.bench.t, args, valid, reply)
        if valid and phases:
            phases.note_power_ceiling(args * 1000, rig.bench.t)
    elif kind == "phases":
        reply = rig.request("settings", {"requestId": "f%d" % n, "settings": {
            "phases_mode": {"value": args, "unit": "phases"}}})
        status = reply.get("meta", {}).get("status")
        note[1] += " -> %s" % status
        if status != 200:
            raise Violation(API, rig.bench.t, "phases_mode %r answered %r" % (args, reply),
                            checker.history(rig.bench.t))
    elif kind == "limit":
        value, unit, ttl = args or (None, None, None)
        valid = valid_limit(value, unit, ttl, checker.max_current)
        body = {"requestId": "f%d" % n, "limit": None}
        if args:
            body.update(limit={"value": value, "unit": unit}, ttl=ttl, source="fuzz")
        checker.limit_sent(value, unit, valid)
        reply = rig.request("limit", body)
        note[1] += " -> %s" % reply.get("meta", {}).get("status")
        checker.limit_reply(rig.bench.t, t, value, unit, ttl, valid, reply)
    elif kind == "failsafe":
        valid = valid_cap(args)
        checker.failsafe_sent(args, valid)
        reply = rig.request("settings", {"requestId": "f%d" % n, "settings": {
            FAILSAFE: {"value": args, "unit": "kw"}}})
        note[1] += " -> %s" % reply.get("meta", {}).get("status")
        checker.failsafe_reply(rig.bench.t, args, valid, reply)
    elif kind == "cmd":
        name, action_id, strategy = args
        body = {"requestId": "f%d" % n, "action": {"command": name}}
        if action_id:
            body["actionId"] = action_id
        if strategy:
            body["onConflict"] = strategy
        reply = rig.request("commands", body)
        status = reply.get("meta", {}).get("status")
        note[1] += " -> %s%s" % (status, " " + reply["data"]["id"] if status == 202 else "")
        checker.command_reply(rig.bench.t, action_id, reply)
    elif kind == "reset":
        checker.reset_sent()
        default_w = checker.default_kw * 1000
        if phases:
            phases.power_ceiling_sent(default_w)
        rig.factory_reset()
        checker.reset_done(rig.bench.t)
        if phases:
            phases.note_power_ceiling(default_w, rig.bench.t)


def shrink(scenario, play, violation, budget_s=60):
    """A shorter timeline that breaks the same invariant: cut at the violation, then drop
    steps while it still fails (delta debugging). play: as player() gives it. Returns
    (keep, until, violation)."""
    deadline = time.monotonic() + budget_s
    until = violation.t + TICK_MS if violation.t < scenario.length_ms else None
    limit = until if until is not None else scenario.length_ms
    keep = [i for i, s in enumerate(scenario.steps) if s.t < limit]
    best = violation

    def fails(trial):
        try:
            play(set(trial), until)
        except Violation as v:
            return v if v.invariant == violation.invariant else None
        return None

    chunk = max(1, len(keep) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        i, removed = 0, False
        while i < len(keep) and time.monotonic() < deadline:
            trial = keep[:i] + keep[i + chunk:]
            v = fails(trial)
            if v is not None:
                keep, best, removed = trial, v, True
            else:
                i += chunk
        if not removed:
            chunk //= 2
    best.replay = play.command(keep, until)
    return keep, until, best


# -- make fuzz
def rig_maker(interp, root, module_dirs=None):
    """make_rig as the test fixture gives it, for the command line."""
    made = [0]

    def make(**kw):
        made[0] += 1
        d = os.path.join(root, "flash%d" % made[0])
        os.makedirs(d)
        if interp == "cpython":
            return InProcessRig(d, **kw)
        return ProcessRig(d, module_dirs, **kw)

    return make


def _module_dirs():
    # The wheel build, compiled: what ProcessRig runs (tools.paths.BUILDS).
    from tools.device.compile import compile_all
    from tools.paths import MPY_DIR
    failures = compile_all(MPY_DIR)
    if failures:
        raise SystemExit("fuzz: firmware does not compile: %s" % failures)
    return "wheel"


def _ints(text):
    if text == "none":
        return []
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated step numbers, got %r" % text)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, no usage dump
        raise SystemExit("fuzz: %s (see --help)" % message)


def main(argv=None):
    p = _Parser(prog="make fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, help="replay this one seed, verbosely")
    p.add_argument("--seeds", type=int, default=500, help="how many seeds (default 500)")
    p.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--interp", choices=INTERPRETERS + ("both",), default="both")
    p.add_argument("--site", action="store_true", help="sites of several chargers (the "
                   "seeds of site_fuzz.py) instead of one charger")
    p.add_argument("--keep", type=_ints, help="with --seed: play only these step numbers")
    p.add_argument("--until", type=int, help="with --seed: stop the timeline at this bench ms")
    p.add_argument("--shrink", action="store_true", help="with --seed: shorten a failing "
                   "timeline and print the steps that still break the invariant")
    p.add_argument("--show", action="store_true", help="with --seed: print the timeline")
    a = p.parse_args(argv)
    if a.seeds < 1:
        p.error("--seeds must be at least 1")
    if a.seed is None and (a.keep is not None or a.until is not None or a.shrink or a.show):
        p.error("--keep, --until, --shrink and --show need --seed")
    interps = INTERPRETERS if a.interp == "both" else (a.interp,)
    dirs = _module_dirs() if "micropython" in interps else None
    with tempfile.TemporaryDirectory(prefix="fuzz-") as root:
        if a.seed is not None:
            return _one(a, interps, root, dirs)
        return _many(a, interps, root, dirs)


def scenario(seed, site=False):
    """The scenario a seed gives: one charger's (generate) or a site's (generate_site)."""
    if site:
        from .site_fuzz import generate_site
        return generate_site(seed)
    return generate(seed)


def player(sc, interp, root, dirs=None):
    """play(keep=None, until=None): plays scenario sc on fresh rigs under root; returns the
    bench ms played or raises Violation. play.command(keep, until): its replay command."""
    made = [0]

    def play(keep=None, until=None):
        made[0] += 1
        where = os.path.join(root, interp, "%sseed%d-run%d" % (
            "site-" if hasattr(sc, "site") else "", sc.seed, made[0]))
        if hasattr(sc, "site"):
            from .site_fuzz import run_site
            return run_site(sc, interp, where, keep, until)
        return run(sc, rig_maker(interp, where, dirs), interp, keep, until)

    play.command = lambda keep, until: replay_command(sc.seed, interp, keep, until,
                                                      hasattr(sc, "site"))
    return play


def _one(a, interps, root, dirs):
    sc = scenario(a.seed, a.site)
    print(sc.describe())
    if a.show:
        for i, s in enumerate(sc.steps):
            if a.keep is None or i in a.keep:
                print("  %4d  t=%-8d %s%r" % (i, s.t, s.who + ": " if s.who else "", s))
    status = 0
    for interp in interps:
        play = player(sc, interp, root, dirs)
        started = time.monotonic()
        try:
            ms = play(None if a.keep is None else set(a.keep), a.until)
            print("%s: passed, %d bench s in %.1f s" % (interp, ms // 1000,
                                                        time.monotonic() - started))
        except Violation as v:
            status = 1
            print("%s: FAILED\n%s" % (interp, v))
            if a.shrink:
                keep, until, best = shrink(sc, play, v)
                print("\nshrunk to %d steps%s:" % (len(keep), "" if until is None else
                                                    ", stopping at t=%d" % until))
                for i in keep:
                    s = sc.steps[i]
                    print("  %4d  t=%-8d %s%r" % (i, s.t, s.who + ": " if s.who else "", s))
                print(best)
    return status


def _many(a, interps, root, dirs):
    failed = {}  # invariant -> [(seed, interp)]
    total = 0
    for interp in interps:
        started, bench_ms, bad = time.monotonic(), 0, 0
        for seed in range(a.start, a.start + a.seeds):
            try:
                bench_ms += player(scenario(seed, a.site), interp, root, dirs)()
            except Violation as v:
                bad += 1
                bench_ms += v.t
                failed.setdefault(v.invariant, []).append((seed, interp))
                print("FAIL %sseed %d (%s): %s at t=%d" % ("site " if a.site else "", seed,
                                                         interp, v.invariant, v.t), flush=True)
        total += bad
        print("%s: %d %sseeds, %d failed, %.1f bench hours in %.0f s" % (
            interp, a.seeds, "site " if a.site else "", bad, bench_ms / 3.6e6,
            time.monotonic() - started), flush=True)
    if failed:
        print("\nfailures by invariant (replay one with the command shown):")
        for inv, where in sorted(failed.items(), key=lambda kv: -len(kv[1])):
            seed, interp = where[0]
            print("  %4d  %s\n        e.g. %s" % (len(where), inv,
                                                 replay_command(seed, interp, site=a.site)))
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
