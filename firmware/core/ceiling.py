# The ceiling the control loop applies: one slot per source, lowest wins (docs/design.md,
# "Ceilings"). The network side writes the slots (limits.py, the settings, OCPP, site
# balancing); the control loop combines them every tick (Ceiling.update: integers, no
# allocation), so a dynamic limit's time-to-live runs out within one tick of its deadline,
# whatever the network is doing, and the expiry is a ring record the worker turns into an
# event. A ceiling given in W is converted to a per-phase current there too, with the
# phases in use at that tick (phases.py), so a switch between one phase and three can never
# leave a power ceiling converted for the other count.
from array import array
from micropython import const
from control import elapsed

# Sources, in the order that names a tie.
CAP = const(0)
MAX_CURRENT = const(1)
CABLE = const(2)
DYNAMIC = const(3)
FAILSAFE = const(4)
SITE = const(5)
UNAVAILABLE = const(6)  # taken out of service (OCPP ChangeAvailability): 0 A
AUTHORIZATION = const(7)  # OCPP: no current without an authorized transaction
UPDATE = const(8)  # an update writes flash or restarts: 0 A (docs/ota.md, "On the charger")
NAMES = ("max_charge_rate", "max_current", "cable", "dynamic_limit", "failsafe", "site",
         "unavailable", "authorization", "update")
_SOURCES = const(9)
NO_EXPIRY = const(0x40000000)  # a ttl longer than any elapsed() can be
AS_IS = const(-2)  # lowest_with(): a slot as it stands

EV_LIMIT_EXPIRED = const(5)  # a ring record kind (control.py has 1-4)


class Ceiling:
    # What the control loop sees. da[source] is that source's ceiling in dA, -1 when it is
    # not in force; the failsafe's counts only while `failsafe`, the dynamic limit's only
    # while it is not.
    def __init__(self, ring):
        self.ring = ring
        self.da = array("i", [-1] * _SOURCES)
        # A source given in W has its watts here (-1: given in dA, its da slot counts); its
        # da slot then only says whether it is in force (-1: not).
        self.w = array("i", [-1] * _SOURCES)
        self.dv = 2300  # the supply voltage, 0.1 V (settings.py sets the installation's)
        self.phases = 1  # the phases in use (phases.py sets them, in the control loop)
        self.dyn_at = 0  # when the dynamic limit was set or renewed (board ms)
        self.dyn_ttl = 0  # ms
        self.failsafe = False  # a controller went silent (set here, cleared by the network side)
        self.site_at = 0  # when the site share was computed from a fresh meter reading
        self.site_ttl = 0  # how long that reading is fresh (ms); 0: no site balancing
        self.site_fallback = -1  # dA once it is not
        self.site_stale = False  # output: the fallback applies
        self.limit_da = 0  # outputs: the lowest ceiling, and which source it is
        self.limited_by = CAP

    def update(self, now):
        # Control loop, every tick.
        if self.da[DYNAMIC] >= 0 and not self.failsafe and \
                elapsed(now, self.dyn_at) >= self.dyn_ttl:
            self.failsafe = True  # silence is a failure
            self.ring.push(EV_LIMIT_EXPIRED, now, 0)
        self.site_stale = self._site_stale(now)
        v = self._lowest(self.site_stale, -1)
        self.limit_da = v >> 4
        self.limited_by = v & 15

    def lowest(self, now):
        # The same as the control loop computes, for a read that must agree with a setting
        # written a moment ago: (dA << 4) | source, one int.
        return self._lowest(self._site_stale(now), -1)

    def limit_without(self, source, now):
        # The lowest ceiling but one source's (network side: what the site could give).
        return self._lowest(self._site_stale(now), source) >> 4

    def lowest_with(self, cap_da, dyn_da):
        # The lowest ceiling (dA) with the cap and the dynamic limit as given (AS_IS: as they
        # stand, -1: none; a dynamic limit given counts in the failsafe too), without the
        # authorization: what a transaction would get (OCPP's composite schedule).
        return self._lowest(self.site_stale, AUTHORIZATION, cap_da, dyn_da) >> 4

    def _site_stale(self, now):
        return bool(self.site_ttl) and elapsed(now, self.site_at) >= self.site_ttl

    def per_phase_da(self, w):
        # Watts -> per-phase current in dA with the phases in use, rounded down (never
        # more current than the power allows).
        return w * 100 // (self.dv * self.phases)

    def lowest_w(self):
        # The lowest ceiling in force given in W, -1 if none (phases.py's auto).
        w = self.w
        best = -1
        for i in range(_SOURCES):
            v = w[i]
            if v < 0 or (i == DYNAMIC and self.failsafe) or (i == FAILSAFE and not self.failsafe):
                continue
            if best < 0 or v < best:
                best = v
        return best

    def _lowest(self, site_stale, skip, cap=AS_IS, dyn=AS_IS):
        # The lowest ceiling in force and its source, packed in one int so the control
        # loop's tick allocates nothing: (dA << 4) | source.
        da = self.da
        w = self.w
        best = -1
        by = CAP
        for i in range(_SOURCES):
            v = w[i]
            v = da[i] if v < 0 else self.per_phase_da(v)
            if i == SITE and site_stale:
                v = self.site_fallback
            elif i == CAP and cap != AS_IS:
                v = cap
            elif i == DYNAMIC:
                v = dyn if dyn != AS_IS else (-1 if self.failsafe else v)
            elif i == FAILSAFE and not self.failsafe:
                v = -1
            if i == skip or v < 0:
                continue
            if best < 0 or v < best:
                best = v
                by = i
        return (best if best > 0 else 0) << 4 | by

    def set_site(self, share_da, ttl_ms, fallback_da, at):
        # The reading's time first, the share second (a tick in between sees the old share
        # as fresh, or the fallback).
        self.site_fallback = fallback_da
        self.site_ttl = ttl_ms
        self.site_at = at
        self.da[SITE] = share_da

    def set_dynamic(self, da, ttl_ms, now, w=-1):
        # The deadline first, the value second, the failsafe off last: a control loop that
        # reads between them sees the old limit or an expiry, never a new value kept too long.
        # `w`: the limit in W (-1: given in A, `da` is it); `da` first, `w` second, so a
        # tick in between reads the old limit or the new one.
        self.dyn_at = now
        self.dyn_ttl = ttl_ms
        self.da[DYNAMIC] = da
        self.w[DYNAMIC] = w
        self.failsafe = False

    def clear_dynamic(self):
        self.w[DYNAMIC] = -1
        self.da[DYNAMIC] = -1
        self.failsafe = False
