# The charging session's state machine: turns the allowed current into a pilot signal,
# watches the vehicle's answer and drives the contactor. tick() runs every board tick
# and allocates nothing; everything it shares with the network side is a plain integer.
from micropython import const
import pilot

# Reported status (charger-api.md).
DISCONNECTED = const(0)
CONNECTED = const(1)
CHARGING = const(2)
IDLE = const(3)
SUSPENDED = const(4)
FAULT = const(5)
STATUS_NAMES = ("disconnected", "connected", "charging", "idle", "suspended", "fault")

# Faults; the last two are latched until the board restarts.
PILOT_SHORT = const(1)
PILOT_ERROR = const(2)
DIODE_FAULT = const(3)
VENTILATION = const(4)
CONTACTOR_STUCK_OPEN = const(5)
OVERCURRENT = const(6)
CONTACTOR_WELDED = const(7)
RCD_TRIP = const(8)
FAULT_NAMES = (None, "PILOT_SHORT", "PILOT_ERROR", "DIODE_FAULT", "VENTILATION_REQUIRED",
               "CONTACTOR_STUCK_OPEN", "OVERCURRENT", "CONTACTOR_WELDED", "RCD_TRIP")
_FIRST_LATCHED = const(7)

# Records pushed to the event ring: (kind, time, arg).
EV_SESSION_STARTED = const(1)
EV_SESSION_ENDED = const(2)  # arg: session energy, Wh
EV_FAULT_RAISED = const(3)  # arg: fault
EV_FAULT_CLEARED = const(4)  # arg: fault

# Modes of the state machine.
_STANDBY = const(0)  # no vehicle
_READY = const(1)  # vehicle connected, current offered when allowed
_CHARGING = const(2)  # contactor closed
_PAUSING = const(3)  # x1, contactor still closed until the vehicle lets go
_HELD = const(4)  # vehicle connected, no current offered (paused or capped)
_WAKEUP = const(5)  # legacy wake-up: F, then x1, then PWM again
_FAULTED = const(6)
_HOLDOFF = const(7)  # fault cleared, no C for 30 s after it

_CLOSE_STABLE_MS = const(500)
_PAUSE_FORCE_MS = const(6000)
_PAUSE_CURRENT = const(10)  # 1 A
_WAKEUP_AFTER_MS = const(30000)
_WAKEUP_F_MS = const(3000)
_WAKEUP_X1_MS = const(1000)
_FAULT_F_MS = const(300)
_FAULT_HOLDOFF_MS = const(30000)
_FEEDBACK_MS = const(300)
_OVERCURRENT_MS = const(7000)
_TICKS_MASK = const(0x3FFFFFFF)  # board clocks wrap at 2**30 ms


def elapsed(now, since):
    return (now - since) & _TICKS_MASK


class Control:
    def __init__(self, board, ring):
        self.board = board
        self.ring = ring
        self.reader = pilot.Reader()
        self._full = board.PWM_FULL
        # Inputs from the settings and commands (written by the network side).
        self.limit_da = 0  # 0 until the persisted cap is loaded: nothing offered before
        self.paused = False
        # Outputs and status, read by the network side.
        self.mode = _STANDBY
        self.status = DISCONNECTED
        self.pilot = pilot.UNKNOWN
        self.offered_da = 0
        self.fault = 0
        self.forced_open = False  # the last pause had to open under load
        self.session_active = False
        self.session_start_wh = 0
        self._counts = -1
        self._offer_counts = -1  # duty for offered_da, computed when the offer changes
        self._contactor = None
        self._since = 0  # start of the current mode, or of the stable C
        self._c_since = -1
        self._fault_since = 0
        self._feedback_since = -1
        self._over_since = -1
        self._woken = False
        self._settle = True
        self._set_pilot(self._full)
        self._set_contactor(False)

    # -- outputs
    def _set_pilot(self, counts):
        if counts != self._counts:
            self._counts = counts
            self.board.set_pilot(counts)
            self._settle = True  # the next sample may straddle the change

    def _set_contactor(self, closed):
        if closed != self._contactor:
            self._contactor = closed
            self.board.set_contactor(closed)
            self._feedback_since = -1

    @property
    def contactor_closed(self):
        return self._contactor

    def _offer(self, current):
        if current != self.offered_da or self._offer_counts < 0:
            self.offered_da = current
            self._offer_counts = pilot.duty(current, self._full)  # only when it changes
        self._set_pilot(self._offer_counts)

    def _raise(self, now, code):
        self._set_contactor(False)
        self._set_pilot(0)  # F: EVSE not available
        self.offered_da = 0
        self._offer_counts = -1
        if code != self.fault:
            self.ring.push(EV_FAULT_RAISED, now, code)
        self.fault = code
        self.mode = _FAULTED
        self._fault_since = now

    # -- the tick
    def tick(self, now):
        b = self.board
        b.sample()
        if b.rcd_tripped and self.fault != RCD_TRIP:
            self._raise(now, RCD_TRIP)
        self._check_feedback(now, b.feedback)
        pwm_on = 0 < self._counts < self._full
        if self._counts == 0 or self._settle:
            self._settle = False  # own F hides the vehicle; skip a changed period
        else:
            self.pilot = self.reader.sample(b.high_mv, b.low_mv, pwm_on)
        self._track_session(now)
        mode = self.mode
        if mode == _FAULTED or mode == _HOLDOFF:
            self._recover(now)
        elif mode == _WAKEUP:
            self._wakeup(now)
        else:
            self._run(now, b.current_da)
        self.status = self._status()

    def _want(self):
        return 0 if self.paused else pilot.offer(self.limit_da)

    def _run(self, now, current):
        p = self.pilot
        if p == pilot.E:
            return self._raise(now, PILOT_SHORT)
        if p == pilot.F or p == pilot.INVALID:
            return self._raise(now, PILOT_ERROR)
        if p == pilot.D:
            return self._raise(now, VENTILATION)
        if self.reader.diode_fault:
            return self._raise(now, DIODE_FAULT)
        if p == pilot.A or p == pilot.UNKNOWN:
            self._set_contactor(False)
            self._offer(0)
            self.mode = _STANDBY
            return
        want = self._want()
        mode = self.mode
        if mode == _CHARGING:
            if p != pilot.C:
                self._set_contactor(False)  # C -> B: the vehicle stopped asking
                mode = _READY
                self._since = now
                self._c_since = -1
            elif want == 0:
                self._offer(0)
                self.forced_open = False
                self.mode = _PAUSING
                self._since = now
                return
            else:
                self._offer(want)
                self._check_overcurrent(now, current)
        elif mode == _PAUSING:
            if want:
                self.mode = _CHARGING
                return self._offer(want)
            if p != pilot.C or current < _PAUSE_CURRENT or elapsed(now, self._since) >= _PAUSE_FORCE_MS:
                self.forced_open = p == pilot.C and current >= _PAUSE_CURRENT
                self._set_contactor(False)
                mode = _HELD
        if mode == _STANDBY or mode == _HELD:
            mode = _READY if want else _HELD
            self._since = now
            self._c_since = -1
        if mode == _READY:
            if not want:
                self._offer(0)
                mode = _HELD
            else:
                self._offer(want)
                mode = self._ready(now, p)
        self.mode = mode

    def _ready(self, now, p):
        if p == pilot.C:
            if self._c_since < 0:
                self._c_since = now
            elif elapsed(now, self._c_since) >= _CLOSE_STABLE_MS:
                self._set_contactor(True)
                self._over_since = -1
                self._woken = True  # this vehicle is awake: no wake-up later
                return _CHARGING
            return _READY
        self._c_since = -1
        if not self._woken and elapsed(now, self._since) >= _WAKEUP_AFTER_MS:
            self._woken = True
            self._set_pilot(0)
            self._since = now
            return _WAKEUP
        return _READY

    def _wakeup(self, now):
        t = elapsed(now, self._since)
        if t >= _WAKEUP_F_MS + _WAKEUP_X1_MS or (t >= _WAKEUP_F_MS and self.pilot == pilot.A):
            self.mode = _READY
            self._since = now
            self._run(now, 0)
        elif t >= _WAKEUP_F_MS:
            self._set_pilot(self._full)

    def _recover(self, now):
        t = elapsed(now, self._fault_since)
        if self.mode == _FAULTED:
            if self.fault >= _FIRST_LATCHED or t < _FAULT_F_MS:
                return
            self._set_pilot(self._full)  # x1: watch the pilot with nothing offered
            p = self.pilot
            if p == pilot.A or p == pilot.B or p == pilot.C:
                self.ring.push(EV_FAULT_CLEARED, now, self.fault)
                self.fault = 0
                self.reader.diode_fault = False
                self.mode = _HOLDOFF
        if self.mode == _HOLDOFF and t >= _FAULT_HOLDOFF_MS:
            self.mode = _STANDBY
            self._run(now, 0)

    def _check_feedback(self, now, closed):
        if closed == self._contactor:
            self._feedback_since = -1
            return
        if self._feedback_since < 0:
            self._feedback_since = now
        elif elapsed(now, self._feedback_since) >= _FEEDBACK_MS:
            if closed:
                if self.fault != CONTACTOR_WELDED:
                    self._raise(now, CONTACTOR_WELDED)
            else:
                self._raise(now, CONTACTOR_STUCK_OPEN)

    def _check_overcurrent(self, now, current):
        if current * 10 <= self.offered_da * 11 + 50:
            self._over_since = -1
        elif self._over_since < 0:
            self._over_since = now
        elif elapsed(now, self._over_since) >= _OVERCURRENT_MS:
            self._raise(now, OVERCURRENT)

    def _track_session(self, now):
        p = self.pilot
        if p == pilot.A:
            if self.session_active:
                self.ring.push(EV_SESSION_ENDED, now, self.session_energy())
                self.session_active = False
                self._woken = False
            self.paused = False  # a pause holds a session, not the next vehicle
        elif p == pilot.B or p == pilot.C or p == pilot.D:
            if not self.session_active:
                self.session_active = True
                self.session_start_wh = self.board.energy_wh
                self.ring.push(EV_SESSION_STARTED, now, 0)

    def session_energy(self):
        return self.board.energy_wh - self.session_start_wh if self.session_active else 0

    def _status(self):
        if self.mode == _FAULTED:
            return FAULT
        p = self.pilot
        if not self.session_active or p == pilot.A:
            return DISCONNECTED
        if self.paused:
            return IDLE
        if self.mode == _HOLDOFF or pilot.offer(self.limit_da) == 0:
            return SUSPENDED
        if self._contactor and self.board.current_da >= _PAUSE_CURRENT:
            return CHARGING
        return CONNECTED
