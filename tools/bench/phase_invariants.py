"""The switch between one phase and three, judged from the bench's side of the wires.

A PhaseChecker watches the bench after every step (observe()): the second contactor's coil
as the board drives it and its contact, the main contactor, the pilot, the current and
whether the board has power. It knows nothing of the firmware but the documented timings
(phases.py, docs/safety.md) and raises PhaseViolation, naming the invariant, the bench time
and the recent history, the moment one is broken:

  UNDER_LOAD   the board moves the second contactor only while the main contactor is open
               (coil and contact), the pilot offers nothing (x1 or F) and no current flows
  SETTLE       ... and only once all that has held for SETTLE_MS, and SETTLE_MS after boot
  INTERVAL     two moves in one boot are at least MIN_INTERVAL_MS apart
  RESUME       no current is offered while the contact disagrees with its coil
  STUCK        a contact that disagrees with its coil for FEEDBACK_MS is a fault: the pilot
               shows F then (a fault's F, then x1 to watch), and a welded one (closed, coil
               off) keeps F until the power goes (latched)
  POWER        the current offered, on the phases the bench really connects, never exceeds a
               power ceiling the scenario acknowledged (note_power_ceiling), once it binds;
               a raise is tolerated while its request is in flight (power_ceiling_sent)

host_tests/test_phases.py runs it on seeded scenarios; the fuzzer can run it beside its own
checker (docs/safety.md, "The switch between one phase and three").
"""
from tools.paths import cpython_paths

from .vehicle import offered_amps

cpython_paths()
from control import FEEDBACK_MS  # noqa: E402  (the firmware's timings, defined once there)
from phases import MIN_INTERVAL_MS, SETTLE_MS  # noqa: E402

TICK_MS = 10
SLACK_MS = 2 * TICK_MS  # a decision the agent takes on inputs a tick old, acted on a tick on
BINDS_MS = 2 * TICK_MS  # a lowered ceiling binds this long after its reply (docs/safety.md)
UNDER_LOAD, SETTLE, INTERVAL, RESUME, STUCK, POWER = (
    "UNDER_LOAD", "SETTLE", "INTERVAL", "RESUME", "STUCK", "POWER")
INVARIANTS = (UNDER_LOAD, SETTLE, INTERVAL, RESUME, STUCK, POWER)


class PhaseViolation(AssertionError):
    def __init__(self, invariant, t, detail, history):
        self.invariant = invariant
        self.t = t
        super().__init__("%s at %d ms: %s\n  recent: %s" % (invariant, t, detail, history))


class PhaseChecker:
    def __init__(self, voltage):
        self.voltage = voltage
        self.switches = []  # (t, closed): the board's moves of the second contactor
        self.faults_seen = 0  # disagreements that lasted FEEDBACK_MS (and showed F)
        self._history = []  # (t, what) recent changes, for a violation's report
        self._powered = False
        self._boot_at = None
        self._drive = False  # the coil as driven after the last step
        self._quiet_since = None
        self._last_switch = None  # in this boot
        self._disagree_since = None
        self._latched = False  # a weld lasted FEEDBACK_MS: F until the power goes
        self._ceilings = []  # (t acknowledged, W), newest last
        self._sent = None  # (W,) of a request in flight

    def power_ceiling_sent(self, w):
        """A request for a new power ceiling (W; None: none) is on its way to the agent."""
        self._sent = (w,)

    def note_power_ceiling(self, w, t):
        """The lowest power ceiling (W) in force from its reply at bench time t; None: none."""
        self._ceilings.append((t, w))
        del self._ceilings[:-2]
        self._sent = None

    def power_off(self, t):
        """The board lost its supply (observe() calls it; a runner whose cut and boot fall in
        one tick calls it itself): its coil drops with it."""
        if self._powered:
            self._note(t, "power off")
        self._powered = False
        self._quiet_since = None
        self._disagree_since = None
        self._latched = False
        self._drive = False

    def observe(self, bench, powered):
        t = bench.t
        if not powered:
            self.power_off(t)
            return
        if not self._powered:
            self._powered = True
            self._boot_at = t
            self._last_switch = None
            self._note(t, "boot")
        self._check_contact(bench, t)
        quiet = (not bench.drive and not bench.contactor and not bench.pwm_on and
                 bench.current == 0)
        if bench.phase_drive != self._drive:
            self._check_switch(bench, t, quiet)
        self._drive = bench.phase_drive
        if quiet:
            if self._quiet_since is None:
                self._quiet_since = t
        else:
            self._quiet_since = None
        self._check_power(bench, t)

    # -- the invariants
    def _check_switch(self, bench, t, quiet):
        self._note(t, "second contactor %s" % ("closes" if bench.phase_drive else "opens"))
        if not quiet:
            self._fail(UNDER_LOAD, t, "moved with the main contactor %s/%s (coil/contact), "
                       "%.1f A flowing, pilot at %.2f %%" % (
                           bench.drive, bench.contactor, bench.current, bench.duty_percent))
        if self._quiet_since is None or t - self._quiet_since < SETTLE_MS - SLACK_MS:
            self._fail(SETTLE, t, "moved %s ms after the main contactor opened with nothing "
                       "offered or flowing (settle %d ms)" % (
                           None if self._quiet_since is None else t - self._quiet_since,
                           SETTLE_MS))
        if t - self._boot_at < SETTLE_MS - SLACK_MS:
            self._fail(SETTLE, t, "moved %d ms after boot" % (t - self._boot_at))
        if self._last_switch is not None and t - self._last_switch < MIN_INTERVAL_MS - SLACK_MS:
            self._fail(INTERVAL, t, "moved %d ms after the last move (at least %d ms)" % (
                t - self._last_switch, MIN_INTERVAL_MS))
        self._last_switch = t
        self.switches.append((t, bench.phase_drive))

    def _check_contact(self, bench, t):
        # The contact follows the coil as driven a step ago (the bench moves it at its step).
        disagree = bench.phase_contactor != self._drive
        if not disagree:
            if self._disagree_since is not None:
                self._note(t, "second contactor agrees again")
            self._disagree_since = None
            if self._latched and not bench.f:
                self._fail(STUCK, t, "left F after a weld of the second contactor (latched)")
            return
        if self._disagree_since is None:
            self._disagree_since = t
            self._note(t, "second contactor %s against its coil" % (
                "closed" if bench.phase_contactor else "open"))
        lasted = t - self._disagree_since
        if lasted > SLACK_MS and bench.pwm_on:
            self._fail(RESUME, t, "current offered (%.2f %%) with the second contactor "
                       "disagreeing for %d ms" % (bench.duty_percent, lasted))
        if FEEDBACK_MS + SLACK_MS <= lasted < FEEDBACK_MS + SLACK_MS + TICK_MS:
            if not bench.f:
                self._fail(STUCK, t, "second contactor %s against its coil for %d ms, pilot "
                           "not F" % ("closed" if bench.phase_contactor else "open", lasted))
            self.faults_seen += 1
            if bench.phase_contactor:
                self._latched = True
        if self._latched and not bench.f:
            self._fail(STUCK, t, "left F after a weld of the second contactor (latched)")

    def _check_power(self, bench, t):
        amps = offered_amps(bench.duty_percent) if bench.pwm_on else None
        if amps is None or not self._ceilings:
            return
        allowed = self._ceilings[-1][1]
        if len(self._ceilings) > 1 and t - self._ceilings[-1][0] <= BINDS_MS:
            before = self._ceilings[-2][1]  # a lower one binds shortly after its reply
            allowed = None if before is None or allowed is None else max(allowed, before)
        if self._sent is not None and allowed is not None:
            sent = self._sent[0]
            allowed = None if sent is None else max(allowed, sent)
        if allowed is None:
            return
        w = amps * self.voltage * bench.phases_in_use
        # The duty is rounded down to 0.01 % (0.006 A); the vehicle decodes it exactly.
        if w > allowed + 0.01 * self.voltage * bench.phases_in_use:
            self._fail(POWER, t, "%.2f A offered on %d phase(s) is %.0f W, above %d W" % (
                amps, bench.phases_in_use, w, allowed))

    def _note(self, t, what):
        self._history.append((t, what))
        del self._history[:-12]

    def _fail(self, invariant, t, detail):
        raise PhaseViolation(invariant, t, detail, self._history)
