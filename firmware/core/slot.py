# The one command slot, as integers the control loop can judge every tick without
# allocating: whether the command in flight has done what it promised. The network side
# starts and cancels commands under the lock; the control loop only tries the lock, so it
# never waits for the network.
from micropython import const
import control as ctl
import pilot

NONE = const(0)
CHARGE = const(1)
IDLE = const(2)
COMMANDS = (None, "charge", "idle")

ACKNOWLEDGED = const(1)
COMPLETED = const(2)
FAILED = const(3)
CANCELLED = const(4)
STATES = (None, "acknowledged", "completed", "failed", "cancelled")

VEHICLE_NOT_CONNECTED = const(1)
TIMEOUT = const(2)
FAULT_BASE = const(100)  # FAULT_BASE + control fault code

# Beyond the 6 s forced open, the 5 s pacing of a resumed offer and the 3 s close limit.
_TIMEOUT_MS = const(12000)


class Slot:
    def __init__(self, control, lock):
        self.control = control
        self.lock = lock
        self.command = NONE
        self.state = NONE
        self.error = 0
        self.started = 0
        self.done = 0
        self._prior_paused = False

    def start(self, command, now, prior_paused):
        # Caller holds the lock (or the loops have not started). The command's effect on
        # the pause applies at once, so it holds from the moment the command is
        # acknowledged; a failure puts back the pause as it was before the command (a
        # failed command changes nothing).
        self._prior_paused = prior_paused
        self.control.paused = command == IDLE
        self.command = command
        self.error = 0
        self.started = now
        self.done = now
        self.state = ACKNOWLEDGED

    def cancel(self, now):
        self.state = CANCELLED
        self.done = now

    def track(self, now):
        if self.state != ACKNOWLEDGED or not self.lock.acquire(0):
            return
        try:
            self._judge(now)
        finally:
            self.lock.release()

    def _judge(self, now):
        c = self.control
        if c.status == ctl.FAULT:
            self._fail(now, FAULT_BASE + c.fault)
        elif ctl.elapsed(now, self.started) >= _TIMEOUT_MS:
            self._fail(now, TIMEOUT)
        elif c.pilot == pilot.UNKNOWN:
            return  # just booted: the pilot has not been read yet
        elif not c.session_active:
            self._fail(now, VEHICLE_NOT_CONNECTED)
        elif self.command == CHARGE and (c.offered_da > 0 or c.status == ctl.SUSPENDED):
            self._end(now, COMPLETED, 0)
        elif self.command == IDLE and c.paused_and_open():
            self._end(now, COMPLETED, 0)

    def _fail(self, now, error):
        # Exactly as before the command: whether a vehicle is there may be unknown now (a
        # pilot short), and the control loop clears a pause itself when it reads A.
        self.control.paused = self._prior_paused
        self._end(now, FAILED, error)

    def _end(self, now, state, error):
        self.error = error
        self.done = now
        self.state = state
