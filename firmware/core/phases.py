# One phase or three (docs/meters.md, "One phase or three"): a three-phase charger whose
# second contactor switches L2/L3 can drop to one phase and back. This module knows which
# phases are in use, which ones are wanted (the phases_mode setting, or `auto` by the power
# ceilings), and makes the switch, never under load: the control loop calls step() every
# tick (integers only, no allocation, never waits) and holds the offer at 0 while `holding`;
# the switch itself waits until the main contactor has been open, with nothing offered and
# nothing flowing, for SETTLE_MS, and comes at most once per MIN_INTERVAL_MS. The network
# side writes only `mode`. Timings and their sources: docs/safety.md, docs/meters.md.
from micropython import const
from control import elapsed, FEEDBACK_MS, PHASE_STUCK_OPEN, PHASE_WELDED

# phases_mode, as the setting's word holds it (settings.py): auto, or the phases to use.
AUTO = const(0)
# With the main contactor open and nothing flowing, this long before the second contactor
# moves: the vehicle has let go and settled (EVerest EvseManager's switch_3ph1ph_delay_s,
# default 10 s; many vehicles need the pause: docs/meters.md).
SETTLE_MS = const(10000)
# Two switches at least this far apart (evcc's phaseSwitchDuration, 60 s: it allows the
# charger to be out of sync and measures no phases meanwhile, core/loadpoint.go).
MIN_INTERVAL_MS = const(60000)
# auto: back to three phases only this far above three phases at 6 A (EVerest EnergyManager
# switch_3ph1ph_power_hysteresis_W: "4.2 kW to 4.4 kW").
HYSTERESIS_W = const(200)
EV_PHASES_SWITCHED = const(6)  # a ring record kind (control.py 1-4, ceiling.py 5); arg: phases


class Phases:
    def __init__(self, board, ring, ceiling):
        self.board = board
        self.ring = ring
        self.ceiling = ceiling
        self.switchable = board.PHASE_SWITCH  # config phase_switch (docs/boards.md)
        # Input, written by the network side (settings.py): AUTO, 1 or 3.
        self.mode = AUTO
        # Outputs, read by the control loop and the network side.
        self.in_use = 1 if self.switchable else int(board.config["phases"])
        self.wanted = self.in_use
        self.holding = False  # a switch is due or under way: nothing may be offered
        self.agrees = True  # the second contactor's feedback follows its coil
        self.switches = 0  # since boot (diagnostics)
        # Every board starts with the second contactor open (one phase): boards.md.
        self._drive = False
        self._quiet_since = -1  # main contactor open, nothing offered or flowing, since
        self._settled = False  # ... for SETTLE_MS (kept, so a clock wrap cannot undo it)
        self._switched_at = -1  # the last switch, until MIN_INTERVAL_MS has passed
        self._feedback_since = -1
        self._one_only = False  # the second contactor would not close: one phase, this session
        ceiling.phases = self.in_use

    def new_session(self):
        # A vehicle plugged in: a second contactor that failed to close may be tried again.
        self._one_only = False

    def step(self, now, quiet):
        # Control loop, every tick, after the board is sampled. `quiet`: the main contactor
        # is open (coil and feedback), the pilot offers nothing and no current flows.
        # Returns a fault code for the control loop to raise, or 0.
        if not self.switchable:
            return 0
        fault = self._check_feedback(now)
        if quiet:
            if self._quiet_since < 0:
                self._quiet_since = now
            elif not self._settled and elapsed(now, self._quiet_since) >= SETTLE_MS:
                self._settled = True
        else:
            self._quiet_since = -1
            self._settled = False
        if self._switched_at >= 0 and elapsed(now, self._switched_at) >= MIN_INTERVAL_MS:
            self._switched_at = -1
        want = self._want()
        self.wanted = want
        due = (want == 3) != self._drive and self._switched_at < 0
        if due and self._settled:
            self._switch(now, want == 3)
            due = False
        self.holding = due or not self.agrees
        return fault

    def _switch(self, now, three):
        self._drive = three
        self.board.set_phase_contactor(three)
        self._switched_at = now
        self._feedback_since = now  # the contact follows within FEEDBACK_MS
        self.agrees = False
        self.switches += 1
        self.ring.push(EV_PHASES_SWITCHED, now, 3 if three else 1)
        self._in_use(self.board.phase_feedback)

    def _check_feedback(self, now):
        fb = self.board.phase_feedback
        self._in_use(fb)
        if fb == self._drive:
            self._feedback_since = -1
            self.agrees = True
            return 0
        self.agrees = False
        if self._feedback_since < 0:
            self._feedback_since = now
        elif elapsed(now, self._feedback_since) >= FEEDBACK_MS:
            if fb:
                return PHASE_WELDED  # closed with its coil off: latched (docs/safety.md)
            self._one_only = True  # open with its coil on: one phase for this session
            return PHASE_STUCK_OPEN
        return 0

    def _in_use(self, fb):
        # Three phases while the coil or the contact says so: the per-phase current of a
        # power ceiling is then the smaller one, whichever of the two is right.
        n = 3 if self._drive or fb else 1
        self.in_use = n
        self.ceiling.phases = n

    def _want(self):
        if self._one_only:
            return 1
        m = self.mode
        if m != AUTO:
            return m
        # auto: by the lowest ceiling given in W (docs/meters.md): one phase when three
        # cannot carry 6 A but one can; three again from 3 x V x 6 A + HYSTERESIS_W.
        p = self.ceiling.lowest_w()
        if p < 0:
            return 3
        dv = self.ceiling.dv  # 0.1 V
        three_min = (dv * 18 + 9) // 10  # W, rounded up: 3 phases x 6 A x V
        if self._drive:
            return 1 if (dv * 6 + 9) // 10 <= p < three_min else 3
        return 3 if p >= three_min + HYSTERESIS_W else 1
