# The network side of the ceilings (docs/protocol.md, the dynamic limit): the `limit`
# request, the persisted "a controller is in charge" flag, the sources the settings and an
# uplink set, and the read. It writes the slots of the control loop's ceiling (ceiling.py),
# which combines them every tick. Runs in the uplinks' threads and the worker.
from api_text import invalid, printable, refused_settings, setting_error
import ceiling as cl
import persist as ps
import record
import settings as st

TTL_MIN = 1
TTL_MAX = 3600
TTL_DEFAULT = 60
_SOURCE_MAX = 32


def _refused(code, message, details=None, key="limit"):
    # A limit request refused for one of its fields: 422, the shape a settings write has.
    return 422, refused_settings([setting_error(key, code, message, details)])


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
        # The static sources, from the settings and the installation. The power ceilings
        # stay in W: the control loop converts them with the phases in use (ceiling.py).
        s = self.settings
        c = self.ceiling
        c.w[cl.CAP] = s.cap_w
        c.w[cl.FAILSAFE] = s.failsafe_w
        da = c.da
        da[cl.MAX_CURRENT] = int(s.max_current * 10)
        da[cl.CABLE] = s.cable_current * 10 if s.cable_current else -1

    # -- the `limit` request
    def request(self, req, now):
        if "limit" not in req:
            return 400, invalid("limit is required (null clears it)")
        limit = req["limit"]
        if limit is None:
            for key in ("ttl", "source"):
                if key in req:
                    return 400, invalid(key + " is not allowed with limit: null")
            return self._clear(now)
        if type(limit) is not dict or "value" not in limit or "unit" not in limit or \
                len(limit) != 2:
            return 400, invalid("limit must be {value, unit} or null")
        unit = limit["unit"]
        if type(unit) is not str or unit.lower() not in ("a", "kw"):
            return _refused("UNSUPPORTED_UNIT", "unit must be a or kw",
                            {"providedUnit": unit if printable(unit) else None,
                             "supportedUnits": ["a", "kw"]})
        unit = unit.lower()
        value = limit["value"]
        if type(value) not in (int, float) or value - value != 0:
            return _refused("INVALID_SETTING_VALUE", "value must be a finite number")
        top = self.settings.max_current if unit == "a" else st.KW_MAX
        if not 0 <= value <= top:
            return _refused("SETTING_OUT_OF_RANGE", "value outside [0, %s] %s" % (top, unit),
                            {"value": value, "min": 0, "max": top, "unit": unit})
        ttl = req.get("ttl", TTL_DEFAULT)
        if type(ttl) not in (int, float) or ttl - ttl != 0:
            return _refused("INVALID_SETTING_VALUE", "ttl must be a finite number", key="ttl")
        if not TTL_MIN <= ttl <= TTL_MAX:
            return _refused("SETTING_OUT_OF_RANGE", "ttl outside [%d, %d] s" % (TTL_MIN, TTL_MAX),
                            {"value": ttl, "min": TTL_MIN, "max": TTL_MAX, "unit": "s"},
                            key="ttl")
        source = req.get("source", "api")
        if not printable(source, _SOURCE_MAX):
            return 400, invalid("source must be 1-%d printable characters" % _SOURCE_MAX)
        return self._set(value, unit, int(ttl * 1000), source, now)

    def set_dynamic(self, value, unit, ttl_ms, source, now):
        # For an uplink that owns a dynamic limit itself (OCPP's charging profiles: no
        # time-to-live while the profile is in force: ttl_ms None). The value is checked.
        top = self.settings.max_current if unit == "a" else st.KW_MAX
        if not 0 <= value <= top:
            raise ValueError("limit outside [0, %s] %s" % (top, unit))
        return self._set(value, unit, cl.NO_EXPIRY if ttl_ms is None else ttl_ms, source, now)

    def clear_dynamic(self, now):
        return self._clear(now)

    def set_available(self, available):
        # Out of service: a 0 A ceiling, so nothing is offered and nothing else changes.
        self.ceiling.da[cl.UNAVAILABLE] = -1 if available else 0

    def set_authorized(self, authorized):
        # For an uplink that starts transactions (OCPP): 0 A while none is authorized.
        self.ceiling.da[cl.AUTHORIZATION] = -1 if authorized else 0

    def set_updating(self, updating):
        # An update writes flash or restarts (updater.py): 0 A, so no session draws current
        # through a flash stall or a restart.
        self.ceiling.da[cl.UPDATE] = 0 if updating else -1

    def _set(self, value, unit, ttl_ms, source, now):
        s = self.settings
        # kW as the cap converts (never rounded up, with the phases in use at each tick);
        # A to dA, floored.
        w = st.watts(value) if unit == "kw" else -1
        da = s.per_phase_da(w) if unit == "kw" else int(value * 10 + 0.0001)
        if not self._in_charge(True):
            return 500, self.agent.storage_error()
        self.value, self.unit, self.source = value, unit, source
        self.expires_at = None if ttl_ms == cl.NO_EXPIRY else self.agent.stamp_after(now, ttl_ms)
        self.ceiling.set_dynamic(da, ttl_ms, now, w)
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
