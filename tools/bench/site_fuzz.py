"""Sites in the scenario fuzzer: several chargers behind one supply (docs/site.md), each with
its own timeline of fuzz.py's inputs, and the site's own: the household's steps, the meter
going silent, and peers that do not behave: records forged (under another id or a real
charger's), replayed, lost on their way (stale), and chargers whose clocks are off or unset.

`generate_site(seed)` turns a seed into a site scenario (a seed space of its own: `--site`);
`run_site()` plays it on a SiteRig (site_rig.py: every agent in lockstep on one bench clock,
the firmware in process or under micropython) and checks, after every tick, each charger
with its own invariants.Checker (every ceiling it knows: cap, dynamic limit and failsafe,
the site's fallback while the meter is silent, ...) and the site with the SiteChecker (the
fuse, with an honest meter). The vehicles obey the pilot and follow a new offer within 3 s,
and no household step is bigger than the margin and 0.45 x the fuse allow, so every overload
the checker sees is one the chargers could have prevented (docs/site.md, "Choosing
margin_current").

    make fuzz ARGS="--site"                          # many site seeds
    make fuzz SEED=7 INTERP=micropython ARGS="--site"  # one, replayed
"""
import json
import math
import os
import random
import traceback

from . import fuzz
from .fuzz import CRASH, Step, _Gen, replay_command
from .invariants import CAP, FAILSAFE, Checker, Obs, SiteChecker, Violation
from .rig import TICK_MS, UNIX_BASE_MS, ProcessRig
from .site_rig import LATENCY_MS, build

SITE_ID = "home"
FUSES = (16, 20, 25, 32, 40)
TIMEOUTS_S = (2, 5, 10, 10)
FOLLOW_MS = (500, 1000, 1000, 2000, 3000)  # the vehicles: within 3 s (docs/site.md)
STEP_GAP_MS = 8000  # household changes on one phase at least this far apart
SITE_FAULTS = {k: w for k, w in fuzz.FAULTS.items() if k != "overcurrent"}  # a car that
# overdraws overloads the site by itself: the charger trips it after 7 s (safety.md)
RESET_MS = 10 * TICK_MS + TICK_MS  # a factory reset is done within one worker pass
ADVERSE_MS = 10000  # after records stop lying: a pilot's 5 s raise pacing and a follow


class SiteScenario:
    def __init__(self, seed, site, site_phases, chargers, length_ms, steps, meter_clock_ms):
        self.seed = seed
        self.site = site  # the config's site block, without phases
        self.site_phases = site_phases
        self.chargers = chargers  # {id: build()'s charger dict, with "install"}
        self.length_ms = length_ms
        self.steps = steps  # Steps, each with .who: a charger id, or None for the site
        self.meter_clock_ms = meter_clock_ms
        self.ocpp = False

    def describe(self):
        s = self.site
        ch = ", ".join("%s %s A on L%s%s" % (
            cid, c["install"]["max_current"], "".join(str(p) for p in c["lines"]),
            "" if c.get("clock_ms", UNIX_BASE_MS) == UNIX_BASE_MS else
            " (clock never set)" if c["clock_ms"] is None else
            " (clock %+d s)" % ((c["clock_ms"] - UNIX_BASE_MS) // 1000))
            for cid, c in self.chargers.items())
        return "site seed %d: %g A x %d, margin %g A, fallback %g A, timeout %d s; %s; " \
               "%d s, %d steps" % (self.seed, s["fuse_current"], self.site_phases,
                                   s["margin_current"], s["fallback_current"],
                                   s["meter_timeout_s"], ch, self.length_ms // 1000,
                                   len(self.steps))


def _step(t, kind, args, who):
    s = Step(int(t) // TICK_MS * TICK_MS, kind, args)
    s.who = who
    return s


def generate_site(seed):
    r = random.Random(seed * 7919 + 30)
    site_phases = 1 if r.random() < 0.5 else 3
    fuse = r.choice(FUSES)
    margin = r.choice((1, 1, 2, 3))
    n = r.choice((2, 2, 3))
    length = int(r.uniform(60, 150)) * 1000
    chargers = {}
    for k in range(n):
        cid = "charger-%d" % (k + 1)
        three = site_phases == 3 and r.random() < 0.3
        lines = [1, 2, 3] if three else [r.randint(1, site_phases)]
        install = {"voltage": r.randint(220, 240), "phases": 3 if three else 1,
                   "max_current": r.choice(fuzz.INSTALL_AMPS[2:])}
        if r.random() < 0.2:
            install["cable_current"] = r.choice(fuzz.CABLE_AMPS)
        if r.random() < 0.2:
            install["default_kw"] = r.choice((3.7, 7.4, 11, 22))
        x = r.random()  # a clock in step, off by seconds to hours, or never set (no NTP)
        clock = UNIX_BASE_MS if x < 0.5 else None if x < 0.7 else \
            UNIX_BASE_MS + r.choice((-1, 1)) * int(math.exp(r.uniform(math.log(1000),
                                                                     math.log(7.2e6))))
        chargers[cid] = {"phases": install["phases"], "lines": lines, "clock_ms": clock,
                         "follow_ms": r.choice(FOLLOW_MS), "ev_max": 32,
                         "max_current": install["max_current"], "install": install}
    on_phase = [sum(1 for c in chargers.values() if p in c["lines"])
                for p in range(1, site_phases + 1)]
    h_max = fuse - margin - 1.0  # the household alone never reaches the limit
    step_max = 0.45 * fuse + margin - 0.5  # a step the margin covers (site.md)
    fallback = 0
    if r.random() < 0.3 and fuse - margin - 6 * max(on_phase) >= 3:
        # A fallback the installer chose so that every charger at it cannot trip the fuse
        # (site.md, "Choosing fallback_current"): the household stays under what is left.
        fallback = 6
        h_max = fuse - margin - 6 * max(on_phase)
    site = {"id": SITE_ID, "fuse_current": fuse, "margin_current": margin,
            "fallback_current": fallback, "meter_timeout_s": r.choice(TIMEOUTS_S)}
    steps = []
    for k, (cid, c) in enumerate(chargers.items()):
        steps += _charger_steps(seed * 7919 + 31 + k, cid, c, length)
    g = _Gen(seed * 7919 + 40)
    outages = _meter(g, length, site, steps)
    _household(g, length, site_phases, h_max, step_max, outages, site, steps)
    _peers(g, length, site_phases, list(chargers), steps)
    steps.sort(key=lambda s: s.t)
    # The meter's clock: the 6 A rotation turns every 15 minutes of it (site.md), sometimes
    # within the scenario.
    meter_clock = r.choice((0, 0, 15 * 60000 - int(r.uniform(0, length))))
    return SiteScenario(seed, site, site_phases, chargers, length, steps, meter_clock)


def _charger_steps(stream, cid, c, length):
    # fuzz.py's inputs for one charger, from a stream of its own, at a site's pace: a car
    # plugged in most of the time (it obeys the pilot and follows within its follow_ms),
    # and every other input at a lower rate than fuzz.py's storms, so the site is loaded.
    g = _Gen(stream)
    g.behaviour()
    r = g.r
    install = c["install"]
    plugged, t = False, g.logu(10, 3000)
    while t < length:
        if plugged:
            g.add(t, "ev", {"connected": False})
            t += g.logu(100, 20000)
        else:
            g.add(t, "ev", {"connected": True, "request": True, "obeysPilot": True,
                            "maxCurrent": r.choice((13, 16, 20, 32, 32, 48, 80)),
                            "followMs": c["follow_ms"], "ventilation": False,
                            "asleep": r.random() < 0.1})
            g.plug_ins.append(t)
            g.react_to("plug", t)
            t += g.logu(20000, 600000)
        plugged = not plugged
    for t in g.times(g.rate(0.7, 1 / 90, 1 / 10), 0, length):
        g.add(t, "ev", {"request": r.random() < 0.5})
        g.add(t + g.logu(100, 10000), "ev", {"request": True})
    for t in g.times(g.rate(0.6, 1 / 90, 1 / 10), 0, length):
        g.add(t, "ev", {"maxCurrent": r.choice(fuzz.VEHICLE_AMPS)})
    for t in g.times(g.rate(0.8, 1 / 120, 1 / 20), 0, length):
        g.add(t, "fault", g.pick(SITE_FAULTS))
        g.add(t + g.logu(50, 5000), "fault", "none")
    per_amp = install["voltage"] * install["phases"] / 1000
    for t in g.times(g.rate(0.5, 1 / 90, 1 / 5), 0, length):
        g.add(t, "cap", r.choice(fuzz.TYPICAL_KW) if r.random() < 0.5 else
              round(r.uniform(0, 40 * per_amp), r.choice((1, 2))))
    for t in g.times(g.rate(0.6, 1 / 90, 1 / 15), 0, length):
        g.command(t)
    if r.random() < 0.4:  # a controller: dynamic limits, their expiry, the failsafe
        g.add(g.logu(10, 5000), "failsafe", r.choice((3.7, 7.4, 11, 22, 0)))
        fuzz._controller(_Gen(stream + 1000), length, install, g.plug_ins, g.steps)
    for t in g.times(g.rate(0.6, 1 / 120, 1 / 30), 0, length):
        g.add(t, "cut")
        g.add(t + g.logu(10, 5000), "boot")
        g.react_to("boot", t)
    for t in g.times(g.rate(0.9, 1 / 120, 1 / 60), 0, length):
        g.add(t, "reset")
    steps = sorted(g.steps, key=lambda s: s.t)
    g.action_ids(steps)
    return [_step(s.t, s.kind, s.args, cid) for s in steps]


def _meter(g, length, site, out):
    # The bridge goes silent now and then: every charger at its fallback in time.
    spans = []
    for t in g.times(g.rate(0.6, 1 / 120, 1 / 30), 5000, length - 5000):
        end = t + g.logu(1500, 3 * site["meter_timeout_s"] * 1000)
        if spans and t < spans[-1][1] + 5000:
            continue
        spans.append((t, end))
        out.append(_step(t, "meter", False, None))
        out.append(_step(end, "meter", True, None))
    return spans


def _household(g, length, phases, h_max, step_max, outages, site, out):
    # The household per phase: a base load, and steps (a kettle, an oven, an evening
    # load) within what the margin covers, never while the meter is silent nor just
    # before it goes silent (the chargers must have seen a step to answer it).
    r = g.r
    level = [round(r.uniform(0, h_max * 0.6), 1) for _ in range(phases)]
    out.append(_step(0, "household", list(level), None))
    quiet = [(a - (site["meter_timeout_s"] + 2) * 1000, b + 3000) for a, b in outages]
    last = [0] * phases
    for t in g.times(g.rate(0.1, 1 / 20, 1 / 3), 3000, length):
        p = r.randrange(phases)
        if t - last[p] < STEP_GAP_MS:
            continue
        up = r.random() < 0.5
        if up and any(a <= t <= b for a, b in quiet):
            continue
        if up:
            new = min(h_max, level[p] + r.uniform(0.5, step_max))
        else:
            new = max(0.0, level[p] - r.uniform(0.5, h_max))
        level[p] = round(new, 1)
        last[p] = t
        cur = [None] * phases
        cur[p] = level[p]
        out.append(_step(t, "household", cur, None))


def _peers(g, length, phases, ids, out):
    # Records the site's chargers did not send, or sent long ago, and records lost.
    r = g.r
    # Forged: a client publishing a record of its own (or a real charger's id) every
    # second for a while: claims the meter refutes, plausible ones, odd clocks.
    for start in g.times(g.rate(0.4, 1 / 100, 1 / 20), 0, length):
        who = r.choice(("x", "evil", "x") + tuple(ids))
        body = {"phases": sorted(r.sample(range(1, phases + 1), r.randint(1, phases))),
                "drawA": round(r.choice((r.uniform(0, 12), r.uniform(0, 60), 40)), 1),
                "wantsA": r.choice((0, 0, 6, 16, 32, round(r.uniform(0, 32), 1))),
                "offeredA": r.choice((0, 6, 16, round(r.uniform(0, 32), 1)))}
        ts = r.choice(("now", "now", 0, "past", "future"))
        every = r.choice((1000, 1000, 3000, 0))
        n = 1 if every == 0 else int(g.logu(3, 90))
        for k in range(n):
            out.append(_step(start + k * every, "forge", (who, body, ts), None))
    # Garbage now and then.
    for t in g.times(g.rate(0.7, 1 / 60, 1 / 5), 0, length):
        out.append(_step(t, "forge", (r.choice(ids + ["x"]), r.choice(
            (b"not json", b'{"ts": 1}', b'{"ts": 1, "phases": [9], "drawA": 1, "wantsA": 1, '
             b'"offeredA": 1}', b"")), None), None))
    # Replayed: a charger's record, taken now and sent again later, over and over.
    for t in g.times(g.rate(0.5, 1 / 100, 1 / 20), 0, length - 2000):
        cid = r.choice(ids)
        out.append(_step(t, "capture", cid, None))
        every = r.choice((1000, 5000))
        later = t + g.logu(2000, 60000)
        for k in range(int(g.logu(1, 40))):
            out.append(_step(later + k * every, "replay", cid, None))
    # Lost: the broker stops passing one charger's records (or all), then passes them again.
    for t in g.times(g.rate(0.5, 1 / 100, 1 / 30), 0, length):
        who = r.choice(ids + [None])
        out.append(_step(t, "lost", (who, True), None))
        out.append(_step(t + g.logu(2000, 60000), "lost", (who, False), None))


# -- playing a site scenario
class _Fallback:
    """When a charger's site ceiling is its fallback (site.md, Failsafe): from its boot, and
    from meter_timeout_s after its last reading, until the second reading after that (the
    first only announces the charger)."""

    def __init__(self, checker, site):
        self.checker = checker
        self.amps = site["fallback_current"]
        self.timeout_ms = site["meter_timeout_s"] * 1000
        self.last = None  # when the last reading reached it
        self.need = 2  # readings still needed before the share may exceed the fallback
        self.stale = False

    def boot(self, t):
        self.last, self.need, self.stale = None, 2, False
        self.checker.site_fallback(t, self.amps)

    def reading(self, t):
        if self.last is None or t - self.last >= self.timeout_ms:
            self.need = 2
        self.need = max(0, self.need - 1)
        self.last, self.stale = t, False
        if self.need == 0:
            self.checker.site_fallback(t, None)

    def tick(self, t):
        if not self.stale and self.last is not None and \
                t >= self.last + self.timeout_ms + TICK_MS:
            self.stale = True
            self.need = 2
            self.checker.site_fallback(t, self.amps)


class _Player:
    def __init__(self, scenario, sr):
        self.sc = scenario
        self.sr = sr
        self.site = SiteChecker(scenario.site["fuse_current"], scenario.site_phases)
        self.checkers = {}
        self.fallback = {}
        for cid, c in scenario.chargers.items():
            i = c["install"]
            ch = Checker(i["voltage"], i["phases"], i["max_current"], i.get("cable_current"),
                         i.get("default_kw", 50), True)
            self.checkers[cid] = ch
            self.fallback[cid] = _Fallback(ch, scenario.site)
            self.fallback[cid].boot(0)
        self.powered = {cid: True for cid in scenario.chargers}
        self.seen = {cid: 0 for cid in scenario.chargers}
        self.pending = {cid: {} for cid in scenario.chargers}  # requestId -> on_reply
        self.resets = {}  # cid -> bench ms its factory reset is done
        self.lost = set()  # charger ids (None: all) whose records the broker loses
        self.timeout_ms = scenario.site["meter_timeout_s"] * 1000
        self.captured = {}
        self.n = 0
        sr.lost = self._lost

    def _lost(self, topic):
        if "/chargers/" not in topic:
            return False
        return None in self.lost or topic.rsplit("/", 1)[-1] in self.lost

    def note(self, t, who, text):
        entry = [t, text]
        if who is not None:
            self.checkers[who].inputs.append(entry)
        self.site.note(t, "%s: %s" % (who, text) if who else text)
        return entry

    # -- each tick
    def tick(self):
        sr = self.sr
        sr.step()
        t = sr.t
        # A reading reaches every charger powered LATENCY_MS after it is published.
        arrived = bool(sr.readings) and sr.readings[-1] == t - LATENCY_MS
        for cid, rig in sr.rigs.items():
            if arrived and self.powered[cid]:
                self.fallback[cid].reading(t)
            self.fallback[cid].tick(t)
            ch = self.checkers[cid]
            ch.observe(Obs.of(rig.bench, self.powered[cid]))
            self._collect(cid, rig, t)
            done = self.resets.get(cid)
            if done is not None and t >= done:
                del self.resets[cid]
                ch.reset_done(t)
        self.site.observe(t, sr.currents(), sr.offers())

    def _collect(self, cid, rig, t):
        published = rig.published
        events = rig.prefix + "events"
        responses = rig.prefix + "responses"
        while self.seen[cid] < len(published):
            topic, payload, _ = published[self.seen[cid]]
            self.seen[cid] += 1
            if topic == events and isinstance(payload, dict):
                self.checkers[cid].event(payload, t)
            elif topic == responses and isinstance(payload, dict):
                f = self.pending[cid].pop(payload.get("meta", {}).get("requestId"), None)
                if f is not None:
                    f(t, payload)

    # -- inputs
    def request(self, cid, kind, body, on_reply):
        rig = self.sr.rigs[cid]
        self.pending[cid][body["requestId"]] = on_reply
        payload = json.dumps(body).encode()
        if isinstance(rig, ProcessRig):
            rig.agent.send_request(kind, payload)  # answered during the next tick
        else:
            rig.loop.on_request(kind, payload)

    def busy(self, cid):
        return bool(self.pending[cid]) or cid in self.resets

    def apply(self, s):
        t = self.sr.t
        if s.who is None:
            return self._site_input(s, t)
        cid = s.who
        if s.kind == "cut" and self.busy(cid):
            return False  # after its replies: what a request did must be known
        self.n += 1
        note = self.note(t, cid, repr(s))
        ch = self.checkers[cid]
        rig = self.sr.rigs[cid]
        kind, args = s.kind, s.args
        if kind == "ev":
            rig.ev(**args)
        elif kind == "fault":
            rig.fault(args)
        elif kind == "cut":
            if self.powered[cid]:
                self.sr.power_cut(cid)
                self.powered[cid] = False
                ch.power(False, t)
        elif kind == "boot":
            if not self.powered[cid]:
                self.sr.power_on(cid)
                self.powered[cid] = True
                self.seen[cid] = len(rig.published)
                ch.power(True, t)
                self.fallback[cid].boot(t)
        elif not self.powered[cid]:
            note[1] += " (not sent: no power)"
        elif kind == "reset":
            ch.reset_sent()
            if isinstance(rig, ProcessRig):
                rig.agent.factory_reset()
            else:
                rig.board.reset_requested = True
            self.resets[cid] = t + RESET_MS
        else:
            self._request(cid, ch, s, t, note)
        return True

    def _request(self, cid, ch, s, t, note):
        kind, args = s.kind, s.args
        rid = "f%d" % self.n

        def said(reply):
            meta = reply.get("meta", {})
            note[1] += " -> %s%s" % (meta.get("status"), " " + reply["data"]["id"]
                                     if kind == "cmd" and meta.get("status") == 202 else "")

        if kind == "cap":
            valid = fuzz.valid_cap(args)
            ch.cap_sent(args, valid)

            def done(tr, reply):
                said(reply)
                ch.cap_reply(tr, args, valid, reply)
            self.request(cid, "settings", {"requestId": rid, "settings": {
                CAP: {"value": args, "unit": "kw"}}}, done)
        elif kind == "failsafe":
            valid = fuzz.valid_cap(args)
            ch.failsafe_sent(args, valid)

            def done(tr, reply):
                said(reply)
                ch.failsafe_reply(tr, args, valid, reply)
            self.request(cid, "settings", {"requestId": rid, "settings": {
                FAILSAFE: {"value": args, "unit": "kw"}}}, done)
        elif kind == "limit":
            value, unit, ttl = args or (None, None, None)
            valid = fuzz.valid_limit(value, unit, ttl, ch.max_current)
            body = {"requestId": rid, "limit": None}
            if args:
                body.update(limit={"value": value, "unit": unit}, ttl=ttl, source="fuzz")
            ch.limit_sent(value, unit, valid)

            def done(tr, reply):
                said(reply)
                ch.limit_reply(tr, t, value, unit, ttl, valid, reply)
            self.request(cid, "limit", body, done)
        elif kind == "cmd":
            name, action_id, strategy = args
            body = {"requestId": rid, "action": {"command": name}}
            if action_id:
                body["actionId"] = action_id
            if strategy:
                body["onConflict"] = strategy

            def done(tr, reply):
                said(reply)
                ch.command_reply(tr, action_id, reply)
            self.request(cid, "commands", body, done)

    def _site_input(self, s, t):
        sr = self.sr
        kind, args = s.kind, s.args
        if kind == "household":
            old = list(sr.site.household)
            sr.site.set_household(args)
            self.site.household(t, old, sr.site.household)
            text = "household %s A" % [round(h, 1) for h in sr.site.household]
        elif kind == "meter":
            sr.site.meter_on = args
            text = "meter %s" % ("back" if args else "silent")
        elif kind == "forge":
            who, body, ts = args
            if isinstance(body, dict):
                clock = UNIX_BASE_MS + sr.meter_clock_ms + t
                body = dict(body, ts={"now": clock, 0: 0, "past": clock - 600000,
                                      "future": clock + 3600000}[ts])
                payload = json.dumps(body).encode()
            else:
                payload = body
            sr.publish(sr.prefix + "chargers/" + who, payload)
            text = "forged %s: %s" % (who, payload.decode(errors="replace"))
        elif kind == "capture":
            self.captured[args] = sr.retained.get(sr.prefix + "chargers/" + args)
            text = "captured %s's record" % args
        elif kind == "replay":
            payload = self.captured.get(args)
            if payload:
                sr.publish(sr.prefix + "chargers/" + args, payload)
            text = "replayed %s: %s" % (args, payload and payload.decode())
        elif kind == "lost":
            who, on = args
            (self.lost.add if on else self.lost.discard)(who)
            text = "broker %s %s's records" % ("loses" if on else "passes again",
                                              who or "every charger")
        if kind in ("forge", "replay", "lost"):
            # Records not to be trusted, while records are lost and until the chargers have
            # forgotten the last untrue one and their vehicles have followed (site.md: a
            # record is forgotten a timeout after it went stale).
            self.site.adversity(None if self.lost else t + 2 * self.timeout_ms + ADVERSE_MS)
        self.site.note(t, text)


def run_site(scenario, interp, root, keep=None, until=None):
    """Play a site scenario (only the steps in `keep`, up to `until` ms, when given), every
    tick checked; returns the bench ms played. Raises Violation with its replay command."""
    length = scenario.length_ms if until is None else min(until, scenario.length_ms)
    steps = [s for i, s in enumerate(scenario.steps)
             if (keep is None or i in keep) and s.t < length]
    os.makedirs(root, exist_ok=True)
    sr = build(root, scenario.site, scenario.chargers, scenario.site_phases, interp)
    sr.meter_clock_ms = scenario.meter_clock_ms
    p = _Player(scenario, sr)
    try:
        i, waiting = 0, []
        while sr.t < length:
            while i < len(steps) and steps[i].t <= sr.t:
                waiting.append(steps[i])
                i += 1
            held, later = set(), []
            for s in waiting:  # a step that must wait holds its charger's later ones
                if s.who in held or (s.who is not None and not p.apply(s)):
                    held.add(s.who)
                    later.append(s)
                elif s.who is None:
                    p.apply(s)
            waiting = later
            p.tick()
        for cid in sr.rigs:  # the quiet end: power back, every action ends
            if not p.powered[cid]:
                p.apply(_step(sr.t, "boot", None, cid))
        for _ in range(fuzz.DRAIN_MS // TICK_MS):
            p.tick()
        for ch in p.checkers.values():
            ch.finish(sr.t)
        return sr.t
    except Violation as v:
        v.replay = replay_command(scenario.seed, interp, keep, until, site=True)
        raise
    except Exception as e:  # a crash of the firmware (or the link to it) is a finding too
        v = Violation(CRASH, sr.t, "%s\n%s" % (repr(e), "".join(
            traceback.format_exception(e)[-4:])), p.site.history(sr.t))
        v.replay = replay_command(scenario.seed, interp, keep, until, site=True)
        raise v from e
    finally:
        sr.close()
