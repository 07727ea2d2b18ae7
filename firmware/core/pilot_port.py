# The control pilot as the session logic uses it (EVerest splits it the same way: an
# IECStateMachine under the Charger): what the EVSE drives (x1, F or PWM for a current)
# and what it reads back (the debounced state and the diode check). Integers only; nothing
# here allocates.
from micropython import const
import pilot

X1 = const(0)  # steady +12 V: the vehicle may not charge
F = const(1)  # steady -12 V: EVSE not available
PWM = const(2)  # 1 kHz square wave: current offered
MODE_NAMES = ("x1", "F", "PWM")


class PilotPort:
    def __init__(self, board):
        self.board = board
        self.reader = pilot.Reader()
        self.mode = -1
        self.offered_da = 0
        self._straddle = True  # the next sample may straddle a change of output mode
        self.x1()

    # -- outputs
    def x1(self):
        self._set_mode(X1)
        self.offered_da = 0

    def f(self):
        self._set_mode(F)
        self.offered_da = 0

    def offer(self, current):
        # Offer `current` dA, already reduced to what the pilot can signal (pilot.offer);
        # 0 means x1. The duty is computed only when the offer changes.
        if current == 0:
            return self.x1()
        if current != self.offered_da or self.mode != PWM:
            self._set_mode(PWM)
            self.offered_da = current
            self.board.pilot_pwm(pilot.duty(current, self.board.PWM_FULL))

    def _set_mode(self, mode):
        if mode != self.mode:
            self.mode = mode
            self._straddle = True
            if mode == X1:
                self.board.pilot_x1()
            elif mode == F:
                self.board.pilot_f()

    # -- input
    def read(self, high, low):
        # The debounced pilot state. While the EVSE drives F it cannot see the vehicle: the
        # state is left as it was. The first sample after a change between x1, F and PWM
        # may straddle it (a duty change within PWM does not: the high and low levels stay
        # the same): there an F or invalid level can be the EVSE's own old output and the
        # low level may be stale, so those are not judged. A, B, C, D and E always are:
        # no rate of output changes may blind the reader to an unplug or a short.
        if self.mode == F:
            self._straddle = True
            return self.reader.state
        straddle = self._straddle
        self._straddle = False
        if straddle:
            s = pilot.classify(high)
            if s == pilot.F or s == pilot.INVALID:
                return self.reader.state
        return self.reader.sample(high, low, self.mode == PWM and not straddle)
