# The one command slot, as integers the control loop can judge every tick without
# allocating: whether the command in flight has done what it promised. The network side
# starts and cancels commands under the lock; the control loop only tries the lock, so it
# never waits for the network.
from micropython import const
import control as ctl

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

_TIMEOUT_MS = const(10000)  # beyond the 6 s forced open and the 3 s close limit


class Slot:
    def __init__(self, control, lock):
        self.control = control
        self.lock = lock
        self.command = NONE
        self.state = NONE
        self.error = 0
        self.started = 0
        self.done = 0

    def start(self, command, now):
        # Caller holds the lock.
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
            self._end(now, FAILED, FAULT_BASE + c.fault)
        elif not c.session_active:
            self._end(now, FAILED, VEHICLE_NOT_CONNECTED)
        elif self.command == CHARGE and (c.offered_da > 0 or c.status == ctl.SUSPENDED):
            self._end(now, COMPLETED, 0)
        elif self.command == IDLE and not c.contactor_closed and c.board.current_da < 10:
            self._end(now, COMPLETED, 0)
        elif ctl.elapsed(now, self.started) >= _TIMEOUT_MS:
            self._end(now, FAILED, TIMEOUT)

    def _end(self, now, state, error):
        self.error = error
        self.done = now
        self.state = state
