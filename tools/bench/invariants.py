"""The charger's safety and integrity invariants, checked from the bench side of the wire.

The checker sees what a test house would see: after every tick the pilot duty the board
drives, the contactor drive, the vehicle and the bench's faults (`observe`), the replies to
the requests it sent, and the messages the agent published (`event`). It never looks at the
agent's own beliefs. A broken invariant raises `Violation` naming it, the bench time and
the recent history. Rules that need an action's outcome are judged at the end (`finish`).

The rules, their limits and how each is measured are in docs/safety.md ("The fuzzer"); issue
10 lists the defects they were written to catch.
"""
import bisect
import functools
import math
from fractions import Fraction

from .rig import TICK_MS
from .vehicle import offered_amps

OPEN_MS = 100  # contactor drive released after A, E, F, a diode fault, C->B or D
PAUSE_FORCE_MS = 6000  # a pause opens under load at the latest after 6 s ...
PAUSE_FORCE_SLACK_MS = TICK_MS  # ... plus the tick that acts on it
FAULT_F_MS = 300  # a fault shows F at least this long
HOLDOFF_MS = 30000  # no closing for 30 s after a fault has cleared
CEILING_GRACE_MS = 2 * TICK_MS  # a lowered ceiling reaches the pilot within two ticks
PAUSE_GRACE_MS = 2 * TICK_MS  # likewise an acknowledged idle
WAKEUP_AFTER_MS = 29000  # an F after ~30 s of PWM in B with nothing wrong is a wake-up
D_EVIDENCE_MS = OPEN_MS  # a D shorter than this may be debounced away, not a fault
PAUSE_CURRENT_A = 1.0  # a pause opens once the current falls below 1 A
CURRENT_RESOLUTION = Fraction(1, 10)  # ceilings are floored to 0.1 A (the agent's unit)
CAP = "max_charge_rate"
FAILSAFE = "failsafe_charge_rate"
# The dynamic limit and, once it has run out (or after a restart while a controller was in
# charge), the failsafe: one ceiling, as the firmware keeps them (ceiling.Ceiling).
CONTROLLER = "dynamic_limit/failsafe"
SITE = "site"  # a site's fallback, while the charger has no fresh meter reading
NONE = 1e9  # a ceiling not in force
TERMINAL = ("push.completed", "push.failed", "action.cancelled")

# Duty classes: what the vehicle reads from the pilot.
F, X1, PWM, FORBIDDEN = "F", "x1", "PWM", "forbidden"

# Invariant names, as they appear in a violation.
CEILING = "no current offered above a ceiling"
DUTY = "no forbidden duty"
OPEN = "contactor drive off within 100 ms of %s"
NO_PWM = "closed without PWM beyond the 6 s rule"
PAUSE_NO_LOAD = "a pause opens once the current falls below 1 A"
UNDER_LOAD = "a pause waits for the vehicle: no opening under load before 6 s"
F_HOLD = "a fault holds F for at least 300 ms"
HOLDOFF = "no closing within 30 s of a fault clearing"
IDLE_HOLDS = "an acknowledged idle holds until a charge or an unplug"
ONE_TERMINAL = "every acknowledged action gets exactly one terminal event"
RUN_ONCE = "a repeated action id is never run twice"
ONE_RAISE = "one fault.raised per real change"
API = "replies follow charger-api.md"
CONTINUITY = "the checker sees every tick"

# Conditions after which the contactor drive must be off within OPEN_MS.
UNPLUG, SHORT, SHOWS_F, DIODE, C_TO_B, VENT = (
    "unplug (A)", "pilot short (E)", "state F shown", "diode fault", "C->B",
    "ventilation request (D)")


class Violation(AssertionError):
    def __init__(self, invariant, t, detail, history=""):
        self.invariant = invariant
        self.t = t
        self.detail = detail
        self.history = history
        self.replay = ""
        AssertionError.__init__(self, invariant)

    def __str__(self):
        text = "invariant broken: %s\n  at bench t=%d ms: %s" % (self.invariant, self.t,
                                                               self.detail)
        if self.history:
            text += "\n" + self.history
        if self.replay:
            text += "\n  replay: " + self.replay
        return text


def duty_class(counts, full):
    if counts == 0:
        return F
    if counts == full:
        return X1
    percent = 100.0 * counts / full
    return PWM if 8.0 <= percent <= 97.0 else FORBIDDEN


@functools.lru_cache(maxsize=4096)  # a flapping writer sends the same few values
def cap_amps(kw, voltage, phases):
    """The per-phase current a cap allows, I = P / (V x phases), floored to 0.1 A, exactly
    (the decimal the request carried, not its binary float)."""
    exact = Fraction(repr(kw)) * 1000 / (Fraction(repr(voltage)) * phases)
    return math.floor(exact / CURRENT_RESOLUTION) * CURRENT_RESOLUTION


def limit_amps(value, unit, voltage, phases):
    """The per-phase current a dynamic limit allows: amps floored to 0.1 A (protocol.md), or
    kW converted as a cap is."""
    if unit.lower() == "kw":
        return cap_amps(value, voltage, phases)
    return math.floor(Fraction(repr(value)) / CURRENT_RESOLUTION) * CURRENT_RESOLUTION


class Obs:
    """One tick as the bench sees it, after the board has driven its outputs."""
    __slots__ = ("t", "powered", "counts", "full", "drive", "connected", "s2", "ventilation",
                 "fault", "current")

    def __init__(self, t, powered, counts, full, drive, connected, s2, ventilation, fault,
                 current):
        self.t = t
        self.powered = powered
        self.counts = counts
        self.full = full
        self.drive = drive
        self.connected = connected
        self.s2 = s2
        self.ventilation = ventilation
        self.fault = fault
        self.current = current

    @classmethod
    def of(cls, bench, powered):
        v = bench.vehicle
        return cls(bench.t, powered, bench.duty_counts, bench.pwm_full, bench.drive,
                   v.connected, v.s2, v.ventilation, bench.fault, bench.current)


class Ceilings:
    """What the charger may offer (A per phase): the least of named ceilings. A raise is
    allowed at once; a lowered ceiling binds after its grace. While a request that may raise
    one is in flight its value is tolerated. A dynamic limit, a failsafe or a site share is
    one more named ceiling."""

    def __init__(self):
        self._value = {}
        self._tolerated = {}  # name -> [amps, until (ms) or None while in flight]

    def set(self, name, amps, t=0, grace_ms=0):
        amps = float(amps)  # exact to far below the pilot's 0.01 % steps
        old = self._value.get(name)
        kept = [e for e in self._tolerated.get(name, ()) if e[1] is None or t <= e[1]]
        if old is not None and amps < old and grace_ms:
            kept.append([old, t + grace_ms])
        self._tolerated[name] = kept
        self._value[name] = amps

    def tolerate(self, name, amps, until=None):
        entry = [float(amps), until]
        self._tolerated.setdefault(name, []).append(entry)
        return entry

    def withdraw(self, name, entry):
        self._tolerated[name] = [e for e in self._tolerated[name] if e is not entry]

    def allowed(self, t):
        """(amps, binding ceiling's name) at bench time t."""
        best = None
        for name, amps in self._value.items():
            for tolerated, until in self._tolerated.get(name, ()):
                if until is None or t <= until:
                    amps = max(amps, tolerated)
            if best is None or amps < best[0]:
                best = (amps, name)
        return best


class Action:
    __slots__ = ("id", "command", "created", "ack_t", "terminals", "end_t")

    def __init__(self, action_id, command, created, ack_t):
        self.id = action_id
        self.command = command
        self.created = created
        self.ack_t = ack_t
        self.terminals = {}  # event id -> event type, filled in by finish()
        self.end_t = None  # bench time its terminal event was first seen

    @property
    def outcome(self):
        kinds = set(self.terminals.values())
        return kinds.pop() if len(kinds) == 1 else None


class Checker:
    def __init__(self, voltage, phases, max_current, cable_current=None, default_kw=50,
                 metered=True, reading_ms=0):
        self.voltage = voltage
        self.phases = phases
        self.default_kw = default_kw
        self.metered = metered  # without a meter the agent cannot see the current fall
        # How late the agent may see it with a meter: 0 for an S0 meter (read every tick),
        # a period for a Modbus meter (its reading, docs/meters.md). While the meter is
        # faulted, and for that long after, its reading is old or none: no meter.
        self.reading_ms = reading_ms
        self._meter_ok_from = 0  # bench ms from which the meter's reading is current
        self.ceilings = Ceilings()
        self.ceilings.set("max_current", max_current)
        if cable_current:
            self.ceilings.set("cable", cable_current)
        self.ceilings.set(CAP, cap_amps(default_kw, voltage, phases))
        self.ceilings.set(CONTROLLER, NONE)
        self.ceilings.set(SITE, NONE)
        self.max_current = max_current
        # The dynamic limit and its failsafe, as the charger must keep them (protocol.md):
        self.failsafe_kw = 0  # failsafe_charge_rate, persisted (default 0 kW)
        self.in_charge = False  # persisted: a controller set a limit and has not cleared it
        self.dyn = None  # [amps, expiry from (ms), expiry by (ms) or None] while one is in force
        self._limit_entry = None
        self._failsafe_entry = None
        self.inputs = []  # (t, text): everything done to the bench and the agent
        self.trace = []  # (t, powered, duty class, percent, drive, connected, s2, >= 1 A, fault)
        self.actions = {}  # id -> Action, acknowledged ones
        self.order = []  # Actions in acknowledgement order
        self.events = {}  # event id -> event, every distinct one published
        self.terminals = []  # (bench ms published, event): matched to actions at the end
        self._last = None  # the previous Obs
        self._since = {}  # condition -> first tick of its current run
        self._pwm_since = None
        self._f_start = None
        self._f_wakeup = False
        self._wakeups = 0  # per plug-in and boot
        self._evidence = None  # last tick a fault was present (reset by a boot)
        self._raised = set()  # fault codes raised since the last clear, this boot
        self._cap_entry = None
        self._rebooted = False

    # -- what was done (the runner reports every input)
    def note(self, t, text):
        entry = [t, text]  # the runner appends the reply to the text
        self.inputs.append(entry)
        return entry

    def cap_sent(self, kw, valid):
        # While the write is in flight the agent may already apply it (a raise included):
        # tolerate it, unless the value must be refused.
        if valid:
            self._cap_entry = self.ceilings.tolerate(CAP, cap_amps(kw, self.voltage, self.phases))

    def cap_reply(self, t, kw, valid, reply):
        if self._cap_entry is not None:
            self.ceilings.withdraw(CAP, self._cap_entry)
            self._cap_entry = None
        status = reply.get("meta", {}).get("status")
        if valid and status == 200:
            self.ceilings.set(CAP, cap_amps(kw, self.voltage, self.phases), t, CEILING_GRACE_MS)
        elif status == 200 or (valid and status is not None and status < 500):
            raise self._violation(API, t, "cap write %r answered %r" % (kw, reply))

    def reset_sent(self):
        self._cap_entry = self.ceilings.tolerate(
            CAP, cap_amps(self.default_kw, self.voltage, self.phases))

    def reset_done(self, t):
        self.ceilings.withdraw(CAP, self._cap_entry)
        self._cap_entry = None
        self.ceilings.set(CAP, cap_amps(self.default_kw, self.voltage, self.phases), t,
                          CEILING_GRACE_MS)

    # -- the dynamic limit and its failsafe (protocol.md; the `limit` request and the setting)
    def _failsafe_amps(self):
        return cap_amps(self.failsafe_kw, self.voltage, self.phases)

    def _controller_amps(self):
        if self.dyn is not None:
            return self.dyn[0]
        return self._failsafe_amps() if self.in_charge else NONE

    def limit_sent(self, value, unit, valid):
        # While in flight it may already apply (a raise included); a clear (value None)
        # may lift the ceiling.
        if valid:
            amps = NONE if value is None else limit_amps(value, unit, self.voltage, self.phases)
            self._limit_entry = self.ceilings.tolerate(CONTROLLER, amps)

    def limit_reply(self, t, sent_t, value, unit, ttl_s, valid, reply):
        if self._limit_entry is not None:
            self.ceilings.withdraw(CONTROLLER, self._limit_entry)
            self._limit_entry = None
        status = reply.get("meta", {}).get("status")
        if valid and status == 200:
            if value is None:
                self.dyn = None
                self.in_charge = False
            else:
                ttl_ms = int(ttl_s * 1000)
                self.dyn = [limit_amps(value, unit, self.voltage, self.phases),
                            sent_t + ttl_ms, t + ttl_ms]
                self.in_charge = True
            self.ceilings.set(CONTROLLER, self._controller_amps(), t, CEILING_GRACE_MS)
        elif status == 200 or (valid and status is not None and status < 500):
            raise self._violation(API, t, "limit %r %r ttl %r answered %r" % (
                value, unit, ttl_s, reply))

    def failsafe_sent(self, kw, valid):
        if valid and self.in_charge:  # the failsafe may be, or become, the ceiling
            self._failsafe_entry = self.ceilings.tolerate(
                CONTROLLER, cap_amps(kw, self.voltage, self.phases))

    def failsafe_reply(self, t, kw, valid, reply):
        if self._failsafe_entry is not None:
            self.ceilings.withdraw(CONTROLLER, self._failsafe_entry)
            self._failsafe_entry = None
        status = reply.get("meta", {}).get("status")
        if valid and status == 200:
            self.failsafe_kw = kw
            self.ceilings.set(CONTROLLER, self._controller_amps(), t, CEILING_GRACE_MS)
        elif status == 200 or (valid and status is not None and status < 500):
            raise self._violation(API, t, "failsafe write %r answered %r" % (kw, reply))

    def controller(self, t, amps, grace_ms):
        """A controller other than the `limit` request set the dynamic limit (OCPP's
        TxDefaultProfile: no time-to-live) or cleared it (amps None), at t or within
        grace_ms of it."""
        if amps is None:
            self.dyn = None
            self.in_charge = False
        else:
            self.dyn = [amps, None, None]
            self.in_charge = True
        self.ceilings.set(CONTROLLER, self._controller_amps(), t, grace_ms)

    def cap_set(self, t, amps, grace_ms):
        """max_charge_rate written by another path (OCPP's ChargePointMaxProfile) at t or
        within grace_ms of it."""
        self.ceilings.set(CAP, amps, t, grace_ms)

    def _expire(self, t):
        # Silence is a failure: at the deadline the failsafe applies, within a tick of it.
        # The deadline lies between the request's sending and its reply (plus the ttl).
        d = self.dyn
        if d is None or d[1] is None or t < d[1]:
            return
        if t < d[2]:  # from the earliest deadline the failsafe may apply (a raise too)
            self.ceilings.tolerate(CONTROLLER, self._failsafe_amps(), d[2] + CEILING_GRACE_MS)
            d[1] = d[2]  # tolerated once; the latest deadline is next
            return
        self.dyn = None
        self.ceilings.set(CONTROLLER, self._controller_amps(), t, CEILING_GRACE_MS)

    def site_fallback(self, t, amps):
        """The site's fallback (A) binds from t (None: lifted; a raise may come at once)."""
        self.ceilings.set(SITE, NONE if amps is None else amps, t, CEILING_GRACE_MS)

    def command_reply(self, t, sent_id, reply):
        meta = reply.get("meta", {})
        if meta.get("status") != 202:
            return
        a = reply["data"]
        aid = a["id"]
        if sent_id is not None and aid != sent_id:
            raise self._violation(API, t, "sent actionId %r, acknowledged as %r" % (sent_id, aid))
        known = self.actions.get(aid)
        if known is not None:
            if (a["createdAt"], a["command"]) != (known.created, known.command):
                raise self._violation(RUN_ONCE, t, "action %r (%s, created %s) acknowledged "
                                      "again as a new %s created %s" % (
                                          aid, known.command, known.created, a["command"],
                                          a["createdAt"]))
            return
        action = Action(aid, a["command"], a["createdAt"], t)
        self.actions[aid] = action
        self.order.append(action)

    def meter_fault(self, fault, t):
        # The bench's Modbus EV meter faulted (anything but "none") or back.
        self._meter_ok_from = None if fault != "none" else t

    def power(self, on, t):
        # Whatever ran on the board ends with its power: an F cut short is no violation.
        self._since.clear()
        self._f_start = None
        self._pwm_since = None
        self._rebooted = True  # the supply, not the agent, decided the next tick's outputs
        if on:
            self._evidence = None  # a reboot starts afresh: the hold-off is not persisted
            self._raised.clear()
            self._wakeups = 0
            # A dynamic limit is volatile; a restart while a controller was in charge comes
            # back in the failsafe, before any current is offered.
            self.dyn = None
            self.ceilings.set(CONTROLLER, self._controller_amps(), t)

    # -- what the agent published
    def event(self, evt, t):
        eid = evt.get("id")
        if eid in self.events:
            return  # at-least-once: a duplicate delivery of the same event
        self.events[eid] = evt
        kind = evt.get("type")
        data = evt.get("data") or {}
        if kind in TERMINAL:  # its action's reply may come later in the same tick
            self.terminals.append((t, evt))
        elif kind == "fault.raised":
            code = data.get("fault")
            if code in self._raised:
                raise self._violation(ONE_RAISE, t, "fault.raised %s again with no "
                                      "fault.cleared since the last one (at %s)" % (
                                          code, data.get("at")))
            self._raised.add(code)
        elif kind == "fault.cleared":
            self._raised.clear()

    # -- every tick
    def observe(self, o):
        last = self._last
        t = o.t
        if last is not None and t != last.t + TICK_MS:
            raise self._violation(CONTINUITY, t, "previous tick seen was t=%d" % last.t)
        self._expire(t)
        cls = duty_class(o.counts, o.full)
        prev_cls = duty_class(last.counts, last.full) if last else X1
        percent = 100.0 * o.counts / o.full
        self._trace(o, cls, percent)
        if o.connected and not (last and last.connected):
            self._wakeups = 0
        if o.powered:
            self._check_pilot(o, cls, percent)
        self._check_open(o, cls, prev_cls)
        self._check_faults(o, last, cls, prev_cls)
        self._last = o
        self._rebooted = False

    def _trace(self, o, cls, percent):
        row = (o.powered, cls, round(percent, 2), o.drive, o.connected, o.s2,
               o.current >= PAUSE_CURRENT_A, o.fault)
        if not self.trace or self.trace[-1][1:] != row:
            self.trace.append((o.t,) + row)

    def _check_pilot(self, o, cls, percent):
        if cls == FORBIDDEN:
            raise self._violation(DUTY, o.t, "duty %.2f %% (allowed: 0, 100, 8-97 %%)" % percent)
        if cls == PWM:
            offered = offered_amps(percent)
            amps, name = self.ceilings.allowed(o.t)
            if offered > amps + 1e-6:  # float noise of the vehicle's decoding only
                raise self._violation(CEILING, o.t, "the vehicle reads %.3f A from %.2f %%; "
                                      "%s allows %s A" % (offered, percent, name, float(amps)))

    def _run(self, name, on, t):
        # Bench ms the condition has held, None when it does not hold.
        if not on:
            self._since.pop(name, None)
            return None
        return t - self._since.setdefault(name, t)

    def _check_open(self, o, cls, prev_cls):
        t = o.t
        conds = ((UNPLUG, not o.connected, OPEN_MS),
                 (SHORT, o.fault == "pilot_short", OPEN_MS),
                 (SHOWS_F, o.powered and cls == F, OPEN_MS),
                 # a shorted diode shows only while PWM runs
                 (DIODE, o.fault == "diode_short" and o.connected and prev_cls == PWM, OPEN_MS),
                 (C_TO_B, o.connected and not o.s2, OPEN_MS),
                 (VENT, o.connected and o.s2 and o.ventilation, OPEN_MS))
        for name, on, limit in conds:
            held = self._run(name, on, t)
            if o.drive and held is not None and held >= limit:
                raise self._violation(OPEN % name, t, "drive still on %d ms after it began "
                                      "(t=%d)" % (held, self._since[name]))
        no_pwm = self._run("no PWM", o.powered and cls != PWM, t)
        if o.drive and no_pwm is not None and no_pwm >= PAUSE_FORCE_MS + PAUSE_FORCE_SLACK_MS:
            raise self._violation(NO_PWM, t, "drive on for %d ms with the pilot at %s" % (
                no_pwm, cls))
        idle_load = self._run("no load", o.powered and cls != PWM and
                              o.current < PAUSE_CURRENT_A, t)
        limit = OPEN_MS + self.reading_ms
        if o.drive and self.metered and idle_load is not None and idle_load >= limit and \
                self._meter_ok_from is not None and t - self._meter_ok_from >= limit:
            raise self._violation(PAUSE_NO_LOAD, t, "drive on %d ms with no PWM and %.1f A" % (
                idle_load, o.current))
        # Opening under load: only for a fault (the agent shows F in that tick), a lost
        # supply, or after 6 s without PWM; a vehicle still in C drawing current is waited for.
        last = self._last
        if (last is not None and last.drive and not o.drive and o.powered and cls != F
                and not self._rebooted
                and o.s2 and not o.ventilation and o.current >= PAUSE_CURRENT_A
                and (no_pwm is None or no_pwm < PAUSE_FORCE_MS)):
            raise self._violation(UNDER_LOAD, t, "drive released with %.1f A flowing, the "
                                  "vehicle in C and the pilot at %s%s" % (
                                      o.current, cls, "" if no_pwm is None else
                                      " for %d ms" % no_pwm))

    def _check_faults(self, o, last, cls, prev_cls):
        t = o.t
        # A fault's F is held for at least 300 ms, unless the power went.
        if o.powered and cls == F:
            if self._f_start is None:
                self._f_start = t
                self._f_wakeup = self._looks_like_wakeup(o, last, prev_cls)
        elif self._f_start is not None:
            if o.powered and t - self._f_start < FAULT_F_MS and not self._f_wakeup:
                raise self._violation(F_HOLD, t, "F from t=%d for only %d ms" % (
                    self._f_start, t - self._f_start))
            if self._f_wakeup:
                self._wakeups += 1
            self._f_start = None
        if o.powered and cls == PWM:
            if self._pwm_since is None:
                self._pwm_since = t
        else:
            self._pwm_since = None
        # The hold-off counts from the last tick any fault was present.
        d_run = self._run("D on the wire", o.connected and o.s2 and o.ventilation, t)
        if ((self._f_start is not None and not self._f_wakeup) or o.fault == "pilot_short"
                or (d_run is not None and d_run >= D_EVIDENCE_MS)):
            self._evidence = t
        if o.powered and o.drive and not (last and last.drive) and self._evidence is not None \
                and t - self._evidence < HOLDOFF_MS:
            raise self._violation(HOLDOFF, t, "drive on %d ms after the last sign of a fault "
                                  "(t=%d)" % (t - self._evidence, self._evidence))

    def _looks_like_wakeup(self, o, last, prev_cls):
        # The legacy wake-up: F after ~30 s of PWM in B, contactor open, nothing wrong;
        # once per plug-in and boot.
        return (prev_cls == PWM and self._pwm_since is not None
                and o.t - self._pwm_since >= WAKEUP_AFTER_MS and last is not None
                and not last.drive and o.connected and not o.s2 and o.fault == "none"
                and self._wakeups == 0)

    # -- after the last tick and a quiet drain
    def finish(self, t_end):
        for t, evt in self.terminals:
            action = self.actions.get(evt["data"].get("actionId"))
            if action is None:
                raise self._violation(ONE_TERMINAL, t, "%s for %r, which was never "
                                      "acknowledged" % (evt["type"], evt["data"].get("actionId")))
            action.terminals[evt["id"]] = evt["type"]
            if action.end_t is None:
                action.end_t = t
        for a in self.order:
            if len(a.terminals) != 1:
                what = "none" if not a.terminals else ", ".join(
                    "%s %s" % (kind, eid) for eid, kind in a.terminals.items())
                raise self._violation(ONE_TERMINAL, t_end, "%s %r acknowledged at t=%d got %s "
                                      "(%d distinct)" % (a.command, a.id, a.ack_t, what,
                                                         len(a.terminals)),
                                      upto=a.ack_t + 1000, after=a.ack_t - TICK_MS)
        for i, a in enumerate(self.order):
            if a.command == "idle" and a.outcome == "push.completed":
                self._check_pause(a, self.order[i + 1:], t_end)

    def _check_pause(self, idle, later, t_end):
        # From its acknowledgement an idle that completed holds: no PWM after the grace,
        # no closing, until a charge that did not fail, an unplug, or the end. A charge in
        # flight may offer current (that is how it completes); one that then fails must
        # leave the pause as it was, so from its end the idle holds again.
        end = t_end
        failed = None  # a charge in between that failed: it must have changed nothing
        excused = []  # (from, to): a charge in flight that later failed
        for a in later:
            if a.command == "charge" and a.outcome != "push.failed":
                end = min(end, a.ack_t)
                break
            if a.command == "charge":
                excused.append((a.ack_t, (a.end_t or t_end) + PAUSE_GRACE_MS + TICK_MS))
                if failed is None:
                    failed = a

        def broken(t, what):
            why = ""
            if failed is not None and failed.ack_t < t:
                why = "; charge %r acknowledged at t=%d failed, and a failed command " \
                      "changes nothing" % (failed.id, failed.ack_t)
            return self._violation(IDLE_HOLDS, t, "idle %r acknowledged at t=%d (completed), "
                                   "then %s%s" % (idle.id, idle.ack_t, what, why), upto=t)

        rows = self.trace
        first = idle.ack_t + PAUSE_GRACE_MS + TICK_MS  # the first tick that must show it
        begin = max(0, bisect.bisect_right(rows, idle.ack_t, key=lambda r: r[0]) - 1)
        for i in range(begin, len(rows)):
            start, powered, cls, percent, drive, connected = rows[i][:6]
            stop = rows[i + 1][0] if i + 1 < len(rows) else t_end + TICK_MS
            if stop <= idle.ack_t:
                continue
            if start >= end or not connected:
                break  # a charge, or the session ended with the unplug
            at = max(start, first)
            for lo, hi in excused:
                if lo <= at < hi:
                    at = hi
            if powered and cls == PWM and at < min(stop, end):
                raise broken(at, "PWM %.2f %%" % percent)
            if drive and start > idle.ack_t and not rows[i - 1][4] and \
                    not any(lo <= start < hi for lo, hi in excused):
                raise broken(start, "the contactor closed")

    # -- reporting
    def _violation(self, invariant, t, detail, upto=None, after=None):
        return Violation(invariant, t, detail,
                         self.history(t if upto is None else upto, after=after))

    def history(self, t, inputs=8, wire=12, after=None):
        """The last inputs up to bench time t (or the first ones from `after`) and the last
        changes on the wire up to t."""
        if after is None:
            done = [r for r in self.inputs if r[0] <= t][-inputs:]
        else:
            done = [r for r in self.inputs if after <= r[0] <= t][:inputs]
        rows = [r for r in self.trace if r[0] <= t][-wire:]
        out = ["  inputs:"] + ["    t=%-8d %s" % tuple(r) for r in done]
        out.append("  wire (changes): t, powered, pilot, duty %, drive, connected, S2, >=1 A, "
                   "bench fault")
        out += ["    t=%-8d %s" % (r[0], " ".join(str(x) for x in r[1:])) for r in rows]
        return "\n".join(out)


# -- a site: the fuse (docs/site.md, "What works means"), from the site's own currents
SITE_STEADY = "the site is above its fuse only right after a household step up"
SITE_LONG = "the site is back under its fuse within 5 s"
SITE_PEAK = "the site never exceeds 1.45 x its fuse"
SITE_AFTER_STEP_MS = 5000  # an overload may begin this long after a step (a rise in flight)
SITE_OVER_MS = 5000
SITE_TRIP = 1.45  # IEC 60898: a breaker's conventional tripping current


class SiteChecker:
    """The fuse, with an honest meter: above it only right after a household step up on that
    phase (the chargers cannot foresee one, and a rise granted before it may land after it),
    for at most 5 s, and never above 1.45 x the fuse. While the chargers' records are lost,
    forged or replayed (and a while after: `adversity`), a charger may take current another
    one has been granted unheard; that overload too must end within 5 s and stay under
    1.45 x the fuse (docs/site.md, "What is left")."""

    def __init__(self, fuse, phases):
        self.fuse = fuse
        self.adverse_until = -1  # bench ms: records not to be trusted until then
        self.ups = [[] for _ in range(phases)]  # bench ms of each household step up
        self.open = {}  # phase -> [start, peak] of the overload in progress
        self.inputs = []  # (t, text)
        self.trace = []  # (t, currents, {id: offered A}) on every change

    def note(self, t, text):
        self.inputs.append([t, text])

    def adversity(self, until):
        """Records are not to be trusted until bench ms `until` (None: until told again)."""
        if until is None:
            self.adverse_until = float("inf")
        elif self.adverse_until == float("inf") or until > self.adverse_until:
            self.adverse_until = until

    def household(self, t, old, new):
        for p, (a, b) in enumerate(zip(old, new)):
            if b > a + 0.01:
                self.ups[p].append(t)

    def observe(self, t, currents, offers):
        row = ([round(c, 1) for c in currents], {c: round(o, 1) for c, o in offers.items()})
        if not self.trace or self.trace[-1][1:] != row:
            self.trace.append((t,) + row)
        for p, amps in enumerate(currents):
            if amps > self.fuse * SITE_TRIP + 0.01:
                raise self._violation(SITE_PEAK, t, "L%d at %.1f A on a %g A fuse" % (
                    p + 1, amps, self.fuse))
            if amps <= self.fuse + 0.01:
                self.open.pop(p, None)
                continue
            ep = self.open.get(p)
            if ep is None:
                if t > self.adverse_until and \
                        not any(0 <= t - u <= SITE_AFTER_STEP_MS for u in self.ups[p]):
                    raise self._violation(SITE_STEADY, t, "L%d at %.1f A on a %g A fuse, no "
                                          "household step up on it in the %d ms before" % (
                                              p + 1, amps, self.fuse, SITE_AFTER_STEP_MS))
                self.open[p] = [t, amps]
            elif t - ep[0] > SITE_OVER_MS:
                raise self._violation(SITE_LONG, t, "L%d above the %g A fuse since t=%d "
                                      "(now %.1f A)" % (p + 1, self.fuse, ep[0], amps))

    def _violation(self, invariant, t, detail):
        return Violation(invariant, t, detail, self.history(t))

    def history(self, t, inputs=12, rows=16):
        done = [r for r in self.inputs if r[0] <= t][-inputs:]
        out = ["  inputs:"] + ["    t=%-8d %s" % tuple(r) for r in done]
        out.append("  site (changes): t, current per phase A, each charger's offer A")
        out += ["    t=%-8d %s %s" % (r[0], r[1], r[2])
                for r in [r for r in self.trace if r[0] <= t][-rows:]]
        return "\n".join(out)
