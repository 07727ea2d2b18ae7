"""A simulated vehicle on the end of the cable, as docs/bench.md describes it."""

# EV-side resistances (ohm): R3 alone (B), R3 || R2 (C), R3 || ventilation R (D).
R_B = 2740.0
R_C = 882.0
R_D = 246.0

S2_DELAY_MS = 300  # from seeing PWM to closing S2
FOLLOW_MS = 1000  # from a new offer to drawing it (the default: each vehicle has its own)
RELEASE_MS = 1500  # from PWM stopping to opening S2
WAKE_F_MS = 1000  # an asleep vehicle wakes after this much state F


def offered_amps(duty_percent):
    """The current a vehicle reads from the pilot duty (J1772), or None."""
    d = duty_percent
    if 8.0 <= d < 10.0:
        return 6.0
    if 10.0 <= d <= 85.0:
        return d * 0.6
    if 85.0 < d <= 96.0:
        return (d - 64.0) * 2.5
    if 96.0 < d <= 97.0:
        return 80.0
    return None


class Vehicle:
    def __init__(self):
        self.connected = False
        self.request = True
        self.max_current = 32.0
        self.ventilation = False
        self.asleep = False  # needs a legacy wake-up (F) before it requests
        self.obeys_pilot = True  # False: keeps drawing when PWM stops (a faulty car)
        # From a new offer to drawing it: IEC 61851-1 gives a vehicle up to 5 s to follow a
        # lower duty, and real ones take from under a second to about that.
        self.follow_ms = FOLLOW_MS
        self.s2 = False
        self.draw = 0.0  # amps it draws while the contactor is closed
        self._target = 0.0  # what it aims at now
        self._following = 0.0  # what it draws, once S2 and the contactor are closed
        self._changes = []  # (t, amps): aims not yet followed, oldest first
        self._pwm_since = None
        self._x1_since = None
        self._f_since = None

    def update(self, t, duty_percent, contactor_closed):
        """Advance to bench time t (ms) under the given pilot duty."""
        if not self.connected:
            self.s2 = False
            self.draw = self._target = self._following = 0.0
            self._changes = []
            self._pwm_since = self._x1_since = self._f_since = None
            return
        amps = offered_amps(duty_percent)
        if duty_percent <= 0.0:
            self._f_since = t if self._f_since is None else self._f_since
            if t - self._f_since >= WAKE_F_MS:
                self.asleep = False
        else:
            self._f_since = None
        if amps is not None:
            self._x1_since = None
            self._pwm_since = t if self._pwm_since is None else self._pwm_since
            wants = self.request and not self.asleep
            if wants and t - self._pwm_since >= S2_DELAY_MS:
                self.s2 = True
            elif not wants:
                self.s2 = False
            self._aim(t, min(amps, self.max_current) if self.s2 else 0.0)
        else:
            self._pwm_since = None
            self._x1_since = t if self._x1_since is None else self._x1_since
            if self.obeys_pilot:
                self._aim(t, 0.0)
                if t - self._x1_since >= RELEASE_MS or not self.request:
                    self.s2 = False
        if not self.request and self.obeys_pilot:
            self.s2 = False
        # Each change is followed follow_ms after it was seen (a delay, not a restart: an
        # offer that keeps changing is still followed, each step in its turn).
        while self._changes and t - self._changes[0][0] >= self.follow_ms:
            self._following = self._changes.pop(0)[1]
        self.draw = self._following if self.s2 and contactor_closed else 0.0

    def _aim(self, t, amps):
        if amps != self._target:
            self._target = amps
            self._changes.append((t, amps))

    @property
    def resistance(self):
        if not self.connected:
            return None
        if self.s2:
            return R_D if self.ventilation else R_C
        return R_B

    def describe(self):
        return {"connected": self.connected, "request": self.request,
                "maxCurrent": self.max_current, "ventilation": self.ventilation,
                "asleep": self.asleep, "obeysPilot": self.obeys_pilot,
                "followMs": self.follow_ms,
                "state": "C" if self.s2 else ("B" if self.connected else "A")}
