# Ceilings from several sources, lowest wins (docs/protocol.md, the dynamic limit). The network side sets each source
# in a fixed array; the control loop combines them every tick (Ceiling.update: integers, no
# allocation), so a dynamic limit's time-to-live runs out within one tick of its deadline,
# whatever the network is doing. Limits is the network side: the `limit` request, the
# persisted "a controller is in charge" flag, and the read.
from array import array
from micropython import const
from api_text import printable
import persist as ps
import record
import settings as st

# Sources, in the order that names a tie.
CAP = const(0)
MAX_CURRENT = const(1)
CABLE = const(2)
DYNAMIC = const(3)
FAILSAFE = const(4)
SITE = const(5)
UNAVAILABLE = const(6)  # taken out of service (OCPP ChangeAvailability): 0 A
AUTHORIZATION = const(7)  # OCPP: no current without an authorized transaction
NAMES = ("max_charge_rate", "max_current", "cable", "dynamic_limit", "failsafe", "site",
         "unavailable", "authorization")
_SOURCES = const(8)
NO_EXPIRY = const(0x40000000)  # a ttl longer than any elapsed() can be

EV_LIMIT_EXPIRED = const(5)  # a ring record kind (control.py has 1-4)
TTL_MIN = 1
TTL_MAX = 3600
TTL_DEFAULT = 60
_SOURCE_MAX = 32


def _elapsed(now, since):
    return (now - since) & 0x3FFFFFFF


class Ceiling:
    # What the control loop sees. da[source] is that source's ceiling in dA, -1 when it is
    # not in force; the failsafe's counts only while `failsafe`, the dynamic limit's only
    # while it is not.
    def __init__(self, ring):
        self.ring = ring
        self.da = array("i", [-1] * _SOURCES)
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
                _elapsed(now, self.dyn_at) >= self.dyn_ttl:
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

    def _site_stale(self, now):
        return bool(self.site_ttl) and _elapsed(now, self.site_at) >= self.site_ttl

    def _lowest(self, site_stale, skip):
        # The lowest ceiling in force and its source, packed in one int so the control
        # loop's tick allocates nothing: (dA << 4) | source.
        da = self.da
        best = -1
        by = CAP
        for i in range(_SOURCES):
            v = self.site_fallback if i == SITE and site_stale else da[i]
            if i == skip or v < 0 or (i == DYNAMIC and self.failsafe) or \
                    (i == FAILSAFE and not self.failsafe):
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


    def set_dynamic(self, da, ttl_ms, now):
        # The deadline first, the value second, the failsafe off last: a control loop that
        # reads between them sees the old limit or an expiry, never a new value kept too long.
        self.dyn_at = now
        self.dyn_ttl = ttl_ms
        self.da[DYNAMIC] = da
        self.failsafe = False

    def clear_dynamic(self):
        self.da[DYNAMIC] = -1
        self.failsafe = False


def _error(code, message, details=None, status=422, key="limit"):
    return status, {"code": code, "message": key + ": " + message,
                    "details": {"errors": [{"setting": key, "code": code, "message": message,
                                            "details": details or {}}]}}


class Limits:
    def __init__(self, settings, ceiling, persist, agent):
        self.settings = settings
        self.ceiling = ceiling
        self.persist = persist
        self.agent = agent
        self.value = None  # the dynamic limit as requested: value, unit, source, expiry
        self.unit = None
        self.source = None
        self.expires_at = None  # ISO time of its deadline (None while the clock is unknown)
        self.site = None  # site balancing (site.py), where configured

    def load(self):
        # A restart while a controller was in charge comes back in the failsafe, before
        # any current is offered. Returns False if the flag was corrupt (read as set).
        flag = self.persist.read_word(ps.IN_CHARGE, 0)
        self.ceiling.failsafe = flag != 0
        self.refresh()
        return flag != record.CORRUPT

    def refresh(self):
        # The static sources, from the settings and the installation.
        s = self.settings
        da = self.ceiling.da
        da[CAP] = s.per_phase_da(s.cap_w)
        da[MAX_CURRENT] = int(s.max_current * 10)
        da[CABLE] = s.cable_current * 10 if s.cable_current else -1
        da[FAILSAFE] = s.per_phase_da(s.failsafe_w)

    # -- the `limit` request
    def request(self, req, now):
        if "limit" not in req:
            return 400, _bad("limit is required (null clears it)")
        limit = req["limit"]
        if limit is None:
            for key in ("ttl", "source"):
                if key in req:
                    return 400, _bad(key + " is not allowed with limit: null")
            return self._clear(now)
        if type(limit) is not dict or "value" not in limit or "unit" not in limit or \
                len(limit) != 2:
            return 400, _bad("limit must be {value, unit} or null")
        unit = limit["unit"]
        if type(unit) is not str or unit.lower() not in ("a", "kw"):
            return _error("UNSUPPORTED_UNIT", "unit must be a or kw",
                          {"providedUnit": unit if printable(unit) else None,
                           "supportedUnits": ["a", "kw"]})
        unit = unit.lower()
        value = limit["value"]
        if type(value) not in (int, float) or value - value != 0:
            return _error("INVALID_SETTING_VALUE", "value must be a finite number")
        top = self.settings.max_current if unit == "a" else 50
        if not 0 <= value <= top:
            return _error("SETTING_OUT_OF_RANGE", "value outside [0, %s] %s" % (top, unit),
                          {"value": value, "min": 0, "max": top, "unit": unit})
        ttl = req.get("ttl", TTL_DEFAULT)
        if type(ttl) not in (int, float) or ttl - ttl != 0:
            return _error("INVALID_SETTING_VALUE", "ttl must be a finite number", key="ttl")
        if not TTL_MIN <= ttl <= TTL_MAX:
            return _error("SETTING_OUT_OF_RANGE", "ttl outside [1, 3600] s",
                          {"value": ttl, "min": TTL_MIN, "max": TTL_MAX, "unit": "s"}, key="ttl")
        source = req.get("source", "api")
        if not printable(source, _SOURCE_MAX):
            return 400, _bad("source must be 1-32 printable characters")
        return self._set(value, unit, int(ttl * 1000), source, now)

    def set_dynamic(self, value, unit, ttl_ms, source, now):
        # For an uplink that owns a dynamic limit itself (OCPP's charging profiles: no
        # time-to-live while the profile is in force: ttl_ms None). The value is checked.
        top = self.settings.max_current if unit == "a" else 50
        if not 0 <= value <= top:
            raise ValueError("limit outside [0, %s] %s" % (top, unit))
        return self._set(value, unit, NO_EXPIRY if ttl_ms is None else ttl_ms, source, now)

    def clear_dynamic(self, now):
        return self._clear(now)

    def set_available(self, available):
        # Out of service: a 0 A ceiling, so nothing is offered and nothing else changes.
        self.ceiling.da[UNAVAILABLE] = -1 if available else 0

    def set_authorized(self, authorized):
        # For an uplink that starts transactions (OCPP): 0 A while none is authorized.
        self.ceiling.da[AUTHORIZATION] = -1 if authorized else 0

    def _set(self, value, unit, ttl_ms, source, now):
        s = self.settings
        # kW as the cap converts (never rounded up); A to dA, floored.
        da = s.per_phase_da(st.watts(value)) if unit == "kw" else int(value * 10 + 0.0001)
        if not self._in_charge(True):
            return 500, self.agent.storage_error()
        self.value, self.unit, self.source = value, unit, source
        self.expires_at = None if ttl_ms == NO_EXPIRY else self.agent.stamp_after(now, ttl_ms)
        self.ceiling.set_dynamic(da, ttl_ms, now)
        return 200, {"deviceId": self.agent.device_id, "limit": {"value": value, "unit": unit},
                     "source": source, "expiresAt": self.expires_at}

    def _clear(self, now):
        was = self.source if self.value is not None or self.ceiling.failsafe else None
        if not self._in_charge(False):
            return 500, self.agent.storage_error()
        self.value = self.unit = None
        self.ceiling.clear_dynamic()
        if was is not None:
            self.agent.emit("limit.cleared", {"deviceId": self.agent.device_id, "source": was,
                                              "clearedAt": self.agent.stamp(now)})
        self.source = None
        return 200, {"deviceId": self.agent.device_id, "limit": None}

    def _in_charge(self, on):
        # The one persisted bit: written on the transitions only, never per renewal.
        return self.persist.write_word(ps.IN_CHARGE, 1 if on else 0)

    # -- events and the read
    def expired(self, at):
        s = self.settings
        self.value = self.unit = None
        self.agent.emit("limit.expired", {"deviceId": self.agent.device_id, "source": self.source,
                                          "expiredAt": at,
                                          "failsafe": {"value": s.failsafe_w / 1000, "unit": "kw"}})

    def read(self, effective_da):
        c = self.ceiling
        s = self.settings
        dyn = None
        if self.value is not None and not c.failsafe:
            dyn = {"value": self.value, "unit": self.unit, "source": self.source,
                   "expiresAt": self.expires_at}
        return {"effectiveCurrent": effective_da / 10,
                "maxChargeRate": {"value": s.cap_w / 1000, "unit": "kw"},
                "dynamic": dyn, "failsafe": c.failsafe,
                "site": self.site.read() if self.site else None}


def _bad(message):
    return {"code": "INVALID_REQUEST", "message": message, "details": {}}
