# Control-pilot facts (J1772 / IEC 61851-1): the level bands, the current <-> duty
# formulas and a debounced reader. Units: millivolts, deciamps (0.1 A), milliseconds.
from micropython import const

# Pilot states; UNKNOWN until the first stable reading, INVALID between bands.
UNKNOWN = const(0)
A = const(1)
B = const(2)
C = const(3)
D = const(4)
E = const(5)
F = const(6)
INVALID = const(7)
NAMES = ("unknown", "A", "B", "C", "D", "E", "F", "invalid")

# Tolerance bands of the high level (mV), from the standard's min / max.
_A_MIN = const(11400)
_A_MAX = const(12600)
_B_MIN = const(8360)
_B_MAX = const(9560)
_C_MIN = const(5480)
_C_MAX = const(6490)
_D_MIN = const(2620)
_D_MAX = const(3250)
_E_MAX = const(1000)  # |v| below this is a short (0 V nominal)
_NEG_MIN = const(-12600)
_NEG_MAX = const(-11400)

MIN_CURRENT = const(60)  # 6 A: below it there is no valid duty
MAX_CURRENT = const(800)  # 80 A: top of the J1772 range
_LOW_RANGE_MAX = const(510)  # 51 A: end of the duty = A / 0.6 range
_GAP_MAX = const(525)  # 51..52.5 A has no exact duty: offer 51 A

# Debounce: a reading must repeat this many samples to count. A, E and F take
# one sample, since acting on them late is the dangerous direction.
_STABLE_SAMPLES = const(2)


def classify(high):
    # The state a high level (mV) falls in; INVALID between the bands.
    if high >= _A_MIN:
        return A if high <= _A_MAX else INVALID
    if _B_MIN <= high <= _B_MAX:
        return B
    if _C_MIN <= high <= _C_MAX:
        return C
    if _D_MIN <= high <= _D_MAX:
        return D
    if -_E_MAX <= high <= _E_MAX:
        return E
    if _NEG_MIN <= high <= _NEG_MAX:
        return F
    return INVALID


def offer(limit):
    # The current (dA) the pilot can actually signal for a limit (dA); 0 = none.
    if limit < MIN_CURRENT:
        return 0
    if limit > MAX_CURRENT:
        return MAX_CURRENT
    if _LOW_RANGE_MAX < limit < _GAP_MAX:
        return _LOW_RANGE_MAX
    return limit


def duty(current, full):
    # PWM counts (full = 100 %) for an offered current (dA), rounded down so the
    # signalled current never exceeds the offer. 0 A means steady +12 V (x1).
    if current < MIN_CURRENT:
        return full
    if current <= _LOW_RANGE_MAX:
        return current * full // 600  # duty% = A / 0.6
    return (current + 1600) * full // 2500  # duty% = A / 2.5 + 64


class Reader:
    # Debounces classified samples into a stable pilot state.
    def __init__(self):
        self.state = UNKNOWN
        self.diode_fault = False
        self._candidate = UNKNOWN
        self._count = 0
        self._diode_bad = 0

    def reset(self):
        self.state = UNKNOWN
        self._candidate = UNKNOWN
        self._count = 0
        self._diode_bad = 0
        self.diode_fault = False

    def sample(self, high, low, pwm_on):
        s = classify(high)
        if pwm_on and B <= s <= D:
            # The vehicle's diode blocks the negative half-cycle: the low level stays
            # at -12 V. A low near the high level means the diode is shorted.
            self._diode_bad = self._diode_bad + 1 if low > _NEG_MAX else 0
            self.diode_fault = self._diode_bad >= _STABLE_SAMPLES
        if s == self._candidate:
            self._count += 1
        else:
            self._candidate = s
            self._count = 1
        if s == A or s == E or s == F or self._count >= _STABLE_SAMPLES:
            self.state = s
        return self.state
