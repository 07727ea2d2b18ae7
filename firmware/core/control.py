# The charging session's state machine: turns the allowed current into a pilot signal,
# watches the vehicle's answer and drives the contactor. tick() runs every board tick and
# allocates nothing; everything it shares with the network side is a plain integer.
# Every mode is entered through _enter(), which does the entry actions and records the
# transition. The timings are the safety contract; docs/safety.md gives each one's source.
from micropython import const
import pilot
from pilot_port import PilotPort

# Reported status (docs/protocol.md).
DISCONNECTED = const(0)
CONNECTED = const(1)
CHARGING = const(2)
IDLE = const(3)
SUSPENDED = const(4)
FAULT = const(5)
STATUS_NAMES = ("disconnected", "connected", "charging", "idle", "suspended", "fault")

# Faults; from CONTACTOR_WELDED on they are latched until the board restarts. The
# PHASE_ ones are the second contactor's, which switches L2/L3 (phases.py).
PILOT_SHORT = const(1)
PILOT_ERROR = const(2)
DIODE_FAULT = const(3)
VENTILATION = const(4)
CONTACTOR_STUCK_OPEN = const(5)
OVERCURRENT = const(6)
PHASE_STUCK_OPEN = const(7)
CONTACTOR_WELDED = const(8)
RCD_TRIP = const(9)
PHASE_WELDED = const(10)
FAULT_NAMES = (None, "PILOT_SHORT", "PILOT_ERROR", "DIODE_FAULT", "VENTILATION_REQUIRED",
               "CONTACTOR_STUCK_OPEN", "OVERCURRENT", "PHASE_CONTACTOR_STUCK_OPEN",
               "CONTACTOR_WELDED", "RCD_TRIP", "PHASE_CONTACTOR_WELDED")
_FIRST_LATCHED = const(8)

# Records pushed to the event ring: (kind, time, arg).
EV_SESSION_STARTED = const(1)
EV_SESSION_ENDED = const(2)  # arg: session energy, Wh
EV_FAULT_RAISED = const(3)  # arg: fault
EV_FAULT_CLEARED = const(4)  # arg: fault

# Modes of the state machine.
STANDBY = const(0)  # no vehicle
READY = const(1)  # vehicle connected, current offered (PWM), contactor open
SUPPLYING = const(2)  # contactor closed, current offered
PAUSING = const(3)  # x1, contactor still closed until the vehicle lets go
HELD = const(4)  # vehicle connected, no current offered (paused or limited below 6 A)
WAKEUP = const(5)  # legacy wake-up: F, then x1, then PWM again
FAULTED = const(6)
HOLDOFF = const(7)  # fault cleared, no C for 30 s after the clear
MODE_NAMES = ("standby", "ready", "supplying", "pausing", "held", "wakeup", "faulted", "holdoff")

# Why a transition happened (the trace); a fault's cause is CAUSE_FAULT + its code.
BOOT = const(0)
PLUG = const(1)
UNPLUG = const(2)
REQUEST = const(3)  # the vehicle asked (C stable)
STOP = const(4)  # the vehicle stopped asking (C -> B)
LIMIT = const(5)  # paused, or the ceiling fell below 6 A
RESUME = const(6)
LET_GO = const(7)  # the vehicle left C or stopped drawing during a pause
FORCED = const(8)  # the pause opened the contactor under load after 6 s
ASLEEP = const(9)  # no request after 30 s in B2: legacy wake-up
WOKEN = const(10)
CLEARED = const(11)
HOLDOFF_DONE = const(12)
SWITCH = const(13)  # paused for a switch between one phase and three (phases.py)
CAUSE_FAULT = const(100)
CAUSE_NAMES = ("boot", "plug", "unplug", "request", "stop", "limit", "resume", "let_go",
               "forced_open", "asleep", "woken", "cleared", "holdoff_done", "phase_switch")

# Timings (ms). Sources and reasons: docs/safety.md.
# C must read stable this long before closing (IEC 61851-1 Table A.6 seq. 4: close within 3 s)
_CLOSE_STABLE_MS = const(500)
_PAUSE_FORCE_MS = const(6000)  # open under load this long after x1 (Table A.6 seq. 10.2)
_PAUSE_CURRENT = const(10)  # dA: below 1 A the vehicle has let go (docs/safety.md)
# B2 without a request this long: one legacy wake-up (docs/safety.md)
_WAKEUP_AFTER_MS = const(30000)
_WAKEUP_F_MS = const(3000)  # the wake-up's F phase (docs/safety.md: about 3-4 s)
_WAKEUP_X1_MS = const(1000)  # then x1 briefly before PWM again
_FAULT_F_MS = const(300)  # a fault shows F at least this long (docs/safety.md)
_FAULT_HOLDOFF_MS = const(30000)  # no C for this long after a fault clears (docs/safety.md)
# contactor aux contact must follow the coil within this (3x a contactor's 100 ms); the
# second contactor's too (phases.py)
FEEDBACK_MS = const(300)
# above offered + 10 % + 0.5 A this long trips (EVerest soft over-current)
_OVERCURRENT_MS = const(7000)
_OVERCURRENT_TRIPS = const(3)  # trips in one session after which it holds until unplug
# the offer rises at most once per this (docs/safety.md: the vehicle follows within 5 s)
RAISE_MS = const(5000)
_TICKS_MASK = const(0x3FFFFFFF)  # board clocks wrap at 2**30 ms
_TICKS_HALF = const(0x20000000)  # two board times this far apart or more cannot be ordered


# Board time, defined here once (docs/design.md, "Units"): every interval is elapsed(), every
# deadline later(), every comparison passed().
def elapsed(now, since):
    return (now - since) & _TICKS_MASK


def later(t, ms):
    # The board time `ms` after board time t.
    return (t + ms) & _TICKS_MASK


def passed(now, t):
    # Board time `now` is at or after board time t (within 6 days, half the clock's span).
    return elapsed(now, t) < _TICKS_HALF


class Control:
    def __init__(self, board, ring, trace, ceiling, phases):
        self.board = board
        self.ring = ring
        self.trace = trace
        self.port = PilotPort(board)  # x1 before anything else
        self.phases = phases  # one phase or three (phases.py): in use, wanted, the switch
        # Inputs, written by the network side.
        self.ceiling = ceiling  # every source's ceiling (ceiling.py); 0 until they are loaded
        self.paused = False  # idle: hold the session (cleared here at unplug)
        # Outputs and status, read by the network side.
        self.mode = STANDBY
        self.status = DISCONNECTED
        self.pilot = pilot.UNKNOWN
        self.fault = 0
        self.forced_open = False  # the last pause had to open under load
        self.session_active = False
        self.session_start_wh = 0
        # Energy delivered since boot, Wh (energy.py's lifetime and the session count from
        # it): the increments of the board's energy_wh between metered samples only, so a
        # meter with its own register (read from anywhere, docs/meters.md) counts from its
        # first reading, not from the 0 before it, and a stale one adds its gap when it is
        # back. -1 until the first tick has read the board.
        self.energy_wh = -1
        self._meter_wh = -1  # the board's energy_wh at the last metered sample
        self._contactor = None
        self._set_contactor(False)
        self._since = 0  # when the current mode was entered
        self._c_since = -1  # start of a stable C in READY
        self._feedback_since = -1
        self._over_since = -1
        self._trips = 0  # over-current trips this session
        self._woken = False
        self._target = 0  # the offer after pacing, dA
        self._target_at = -1  # when it last changed (-1: never)
        self.last_tick = -1  # board ms of the last tick (the worker sees a stalled loop)
        self.max_gap_ms = 0  # the longest gap between two ticks since boot (diagnostics)
        trace.push(board.now_ms(), -1, STANDBY, BOOT)

    @property
    def offered_da(self):
        return self.port.offered_da

    @property
    def limit_da(self):
        return self.ceiling.limit_da

    @property
    def contactor_closed(self):
        return self._contactor

    # -- the one place a mode is entered
    def _enter(self, mode, now, cause):
        self.trace.push(now, self.mode, mode, cause)
        self.mode = mode
        self._since = now
        self._c_since = -1
        self._over_since = -1
        port = self.port
        if mode == SUPPLYING:
            self._set_contactor(True)
            self._woken = True  # this vehicle is awake: no wake-up later
        elif mode == PAUSING:
            self.forced_open = False
            port.x1()  # the contactor stays closed until the vehicle lets go
        else:
            self._set_contactor(False)
            if mode == FAULTED or mode == WAKEUP:
                port.f()
            elif mode != READY:  # READY's offer is set by its step, this same tick
                port.x1()

    def _set_contactor(self, closed):
        if closed != self._contactor:
            self._contactor = closed
            self.board.set_contactor(closed)
            self._feedback_since = -1

    def _fault(self, now, code):
        if self.fault >= _FIRST_LATCHED:
            return  # the first latched fault stays
        if code == self.fault:
            return
        self.ring.push(EV_FAULT_RAISED, now, code)  # one event per real change
        self.fault = code
        if self.mode != FAULTED:
            self._enter(FAULTED, now, CAUSE_FAULT + code)
        else:  # a different fault while faulted: F again, held from now
            self.port.f()
            self._since = now

    # -- the tick
    def tick(self, now):
        if self.last_tick >= 0 and elapsed(now, self.last_tick) > self.max_gap_ms:
            self.max_gap_ms = elapsed(now, self.last_tick)
        self.last_tick = now
        b = self.board
        b.sample()
        self._count_energy(b)
        p = self.port.read(b.high_mv, b.low_mv)
        self.pilot = p
        self._track_session(now, p)
        if b.rcd_tripped:
            self._fault(now, RCD_TRIP)
        self._check_feedback(now, b.feedback)
        # The second contactor may move only while the main one is open and nothing is
        # offered or flowing (phases.py waits SETTLE_MS of it).
        code = self.phases.step(now, not self._contactor and not b.feedback and
                                self.port.offered_da == 0 and
                                (not b.METERED or b.current_da < _PAUSE_CURRENT))
        if code:
            self._fault(now, code)
        self.ceiling.update(now)
        target = self._pace(now)
        mode = self.mode
        if mode == FAULTED:
            self._recover(now, p)
        elif mode == WAKEUP:
            self._wakeup(now, p, target)
        elif not self._pilot_fault(now, p):
            if mode == HOLDOFF:
                if elapsed(now, self._since) >= _FAULT_HOLDOFF_MS:
                    self._after_holdoff(now, p, target)
            elif p == pilot.A or p == pilot.UNKNOWN:
                if mode != STANDBY:
                    self._enter(STANDBY, now, UNPLUG)
            elif mode == STANDBY or mode == HELD:
                if target:
                    self._enter(READY, now, PLUG if mode == STANDBY else RESUME)
                    self._ready(now, p, target)
                elif mode == STANDBY:
                    self._enter(HELD, now, PLUG)
            elif mode == READY:
                self._ready(now, p, target)
            elif mode == SUPPLYING:
                self._supplying(now, p, target)
            elif mode == PAUSING:
                self._pausing(now, p, target)
        self.status = self._status()

    def _pace(self, now):
        # The offer falls at once and rises at most once per RAISE_MS: requests may come
        # at any rate, the pilot changes at the pace a vehicle can follow.
        want = 0 if self.paused or self.phases.holding else pilot.offer(self.ceiling.limit_da)
        t = self._target
        if want < t or (want > t and (self._target_at < 0 or
                                      elapsed(now, self._target_at) >= RAISE_MS)):
            self._target = want
            self._target_at = now
        return self._target

    def _pilot_fault(self, now, p):
        if p == pilot.E:
            self._fault(now, PILOT_SHORT)
        elif p == pilot.F or p == pilot.INVALID:
            self._fault(now, PILOT_ERROR)
        elif p == pilot.D:
            self._fault(now, VENTILATION)
        elif self.port.reader.diode_fault:
            self._fault(now, DIODE_FAULT)
        else:
            return False
        return True

    def _ready(self, now, p, target):
        if not target:
            return self._enter(HELD, now, self._why_not())
        self.port.offer(target)
        if p == pilot.C:
            if self._c_since < 0:
                self._c_since = now
            elif elapsed(now, self._c_since) >= _CLOSE_STABLE_MS:
                self._enter(SUPPLYING, now, REQUEST)
            return
        self._c_since = -1
        if not self._woken and elapsed(now, self._since) >= _WAKEUP_AFTER_MS:
            self._woken = True
            self._enter(WAKEUP, now, ASLEEP)

    def _supplying(self, now, p, target):
        if p != pilot.C:
            return self._enter(READY if target else HELD, now, STOP)  # C -> B: open at once
        if not target:
            return self._enter(PAUSING, now, self._why_not())
        self.port.offer(target)
        self._check_overcurrent(now)

    def _pausing(self, now, p, target):
        if target:
            self._enter(SUPPLYING, now, RESUME)
            return self.port.offer(target)
        # Let go: out of C, or below 1 A on a reading taken after the pause began (a Modbus
        # meter's may be a period old, from before the vehicle began to draw).
        b = self.board
        let_go = p != pilot.C or (b.METERED and b.current_da < _PAUSE_CURRENT and
                                  passed(b.meter_ms, later(self._since, 1)))
        if let_go:
            self._enter(HELD, now, LET_GO)
        elif elapsed(now, self._since) >= _PAUSE_FORCE_MS:
            self._enter(HELD, now, FORCED)
            self.forced_open = True

    def _why_not(self):
        # The cause of a pause the offer makes: a phase switch, or the pause or a limit.
        return SWITCH if self.phases.holding and not self.paused else LIMIT

    def _wakeup(self, now, p, target):
        t = elapsed(now, self._since)
        if t < _WAKEUP_F_MS:
            return
        if p == pilot.A:
            self._enter(STANDBY, now, UNPLUG)
        elif t >= _WAKEUP_F_MS + _WAKEUP_X1_MS:
            self._enter(READY if target else HELD, now, WOKEN)
            if target:
                self._ready(now, p, target)
        else:
            self.port.x1()

    def _recover(self, now, p):
        if self.fault >= _FIRST_LATCHED or elapsed(now, self._since) < _FAULT_F_MS:
            return
        self.port.x1()  # after F: watch the pilot with nothing offered
        if self._trips >= _OVERCURRENT_TRIPS and p != pilot.A:
            return  # a vehicle that keeps overdrawing is refused until it is unplugged
        if not self.phases.agrees:
            return  # the second contactor has not followed its coil yet (phases.py)
        if p == pilot.A or p == pilot.B or p == pilot.C:
            self.ring.push(EV_FAULT_CLEARED, now, self.fault)
            self.fault = 0
            self.port.reader.diode_fault = False
            self._enter(HOLDOFF, now, CLEARED)  # the 30 s run from the clear

    def _after_holdoff(self, now, p, target):
        if p == pilot.A or p == pilot.UNKNOWN:
            self._enter(STANDBY, now, HOLDOFF_DONE)
        elif target:
            self._enter(READY, now, HOLDOFF_DONE)
            self._ready(now, p, target)
        else:
            self._enter(HELD, now, HOLDOFF_DONE)

    def _check_feedback(self, now, closed):
        if closed == self._contactor:
            self._feedback_since = -1
        elif self._feedback_since < 0:
            self._feedback_since = now
        elif elapsed(now, self._feedback_since) >= FEEDBACK_MS:
            self._fault(now, CONTACTOR_WELDED if closed else CONTACTOR_STUCK_OPEN)

    def _check_overcurrent(self, now):
        # Judged per phase (the board's phase_da): any phase above the offer.
        b = self.board
        over = False
        if b.METERED:
            limit = self.port.offered_da * 11 + 50
            for p in range(3):
                if b.phase_da[p] * 10 > limit:
                    over = True
        if not over:
            self._over_since = -1
        elif self._over_since < 0:
            self._over_since = now
        elif elapsed(now, self._over_since) >= _OVERCURRENT_MS:
            self._trips += 1
            self._fault(now, OVERCURRENT)

    def _count_energy(self, b):
        if self.energy_wh < 0:
            self.energy_wh = 0
        if not b.METERED:
            return  # the meter is not read (or not fresh): its energy_wh means nothing now
        wh = b.energy_wh
        # An imported-energy register never runs backwards: a lower one is another meter
        # (replaced, or reset), counted on from its own value.
        if self._meter_wh >= 0 and wh > self._meter_wh:
            self.energy_wh += wh - self._meter_wh
        self._meter_wh = wh

    def _track_session(self, now, p):
        if p == pilot.A:
            if self.session_active:
                self.ring.push(EV_SESSION_ENDED, now, self.session_energy())
                self.session_active = False
                self._woken = False
                self._trips = 0
            self.paused = False  # a pause holds a session, not the next vehicle
        elif p == pilot.B or p == pilot.C or p == pilot.D:
            if not self.session_active:
                self.session_active = True
                self.session_start_wh = self.energy_wh
                self.ring.push(EV_SESSION_STARTED, now, 0)
                self.phases.new_session()

    def session_energy(self):
        return self.energy_wh - self.session_start_wh if self.session_active else 0

    def _status(self):
        if self.mode == FAULTED:
            return FAULT
        if not self.session_active or self.pilot == pilot.A:
            return DISCONNECTED
        if self.paused:
            return IDLE
        if self.mode == HOLDOFF or pilot.offer(self.ceiling.limit_da) == 0 or \
                self.phases.holding:
            return SUSPENDED
        b = self.board
        if self._contactor and (not b.METERED or b.current_da >= _PAUSE_CURRENT):
            return CHARGING
        return CONNECTED

    def paused_and_open(self):
        # The idle command's promise, kept: this loop has seen the pause (nothing offered)
        # and the contactor is open.
        return self.paused and self._target == 0 and not self._contactor
