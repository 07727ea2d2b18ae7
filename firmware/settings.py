# The settings: max_charge_rate (the persisted power ceiling), failsafe_charge_rate (the
# ceiling while a controller is silent) and the installation facts they are enforced with.
# Validation follows docs/protocol.md: all-or-nothing, every failing key listed. A new cap
# reaches the ceilings first and flash second; in flash it is never above the last
# acknowledged value (docs/storage.md: decreases are written before the reply, raises once
# they have held for a while).
from micropython import const
import _thread
import persist as ps
import record

CAP = "max_charge_rate"
FAILSAFE = "failsafe_charge_rate"  # applies while a controller is silent (docs/protocol.md, the dynamic limit)
WRITABLE = (CAP, FAILSAFE)  # both kW, 0-50, persisted
KW_MIN = 0
KW_MAX = 50
READ_ONLY = ("max_current", "supply_voltage", "phases")
_UNITS = {"max_current": "a", "supply_voltage": "v", "phases": "phases"}

_RAISE_SETTLE_MS = const(5000)  # a raised cap is written once it has held this long
_RAISE_LATEST_MS = const(60000)  # or at the latest this long after it was acknowledged
_FLOOD_MS = const(1000)  # decreases closer together than this are a flood: see write_cap


def _error(key, code, message, details=None, status=422):
    return {"setting": key, "code": code, "message": message, "details": details or {},
            "status": status}


def check(key, entry):
    # The error for one key of a write, or None if it may be applied.
    if key not in WRITABLE:
        if key in READ_ONLY:
            return _error(key, "READ_ONLY_SETTING", key + " is read-only (set by the installer)")
        return _error(key, "UNSUPPORTED_SETTING", "unknown setting")
    if type(entry) is not dict or "value" not in entry or "unit" not in entry:
        return _error(key, "INVALID_REQUEST", "expected {value, unit}", status=400)
    if len(entry) != 2:
        return _error(key, "INVALID_REQUEST", "only value and unit are allowed", status=400)
    unit = entry["unit"]
    if type(unit) is not str or unit.lower() != "kw":
        return _error(key, "UNSUPPORTED_UNIT", "unit must be kw",
                      {"providedUnit": unit, "supportedUnits": ["kw"]})
    value = entry["value"]
    if type(value) not in (int, float) or value - value != 0:
        return _error(key, "INVALID_SETTING_VALUE", "value must be a finite number")
    if not KW_MIN <= value <= KW_MAX:
        return _error(key, "SETTING_OUT_OF_RANGE", "value outside [0, 50] kw",
                      {"value": value, "min": KW_MIN, "max": KW_MAX, "unit": "kw"})
    return None


def watts(kw):
    # kW -> whole watts, rounded down: the cap never grows in conversion. A value within
    # 0.005 W below a whole watt is that watt: 1.38 is 1379.9999999999998 W as a double and
    # 1379.99999523 W as the ESP32's single-precision float, and must stay 1380 W (6 A);
    # single precision is off by at most 0.004 W anywhere up to 50 kW.
    return int(kw * 1000 + 0.005)


def decivolts(volts):
    # The supply voltage in 0.1 V, rounded UP: a higher voltage means less current for the
    # same power, so 239.9 V never becomes 239 V.
    dv = int(volts * 10)
    return dv + 1 if dv < volts * 10 - 1e-6 else dv


class Settings:
    def __init__(self, config, persist):
        self.voltage = config["supply_voltage"]
        self.phases = int(config["phases"])
        self.max_current = config["max_current"]
        self.cable_current = int(config.get("cable_current") or 0)
        self.default_w = watts(float(config.get("default_max_charge_rate", KW_MAX)))
        self._dv_phases = decivolts(self.voltage) * self.phases  # 0.1 V x phases
        self.persist = persist
        self.on_change = None  # f(): the ceilings follow (limits.Limits.refresh)
        self.cap_w = self.default_w
        self.failsafe_w = 0  # docs/protocol.md: a dead controller pauses charging by default
        self._stored_w = None  # the cap in flash, None if there is none
        self._pending_since = -1  # when a cap above the one in flash was acknowledged
        self._changed_at = 0
        self._last_down = -1  # when a decrease was last written
        # write_cap (the uplink) and service / factory_reset (the worker) one at a time:
        # unguarded, a raise the worker had chosen reached flash after a lower cap the
        # uplink wrote meanwhile (host_tests/settings_race_case.py). The control loop never
        # takes it.
        self._lock = _thread.allocate_lock()

    def load(self):
        # Read the settings before any current is offered. Returns the revert reason, if any.
        reason = None
        w = self.persist.read_word(ps.CAP)
        if w is None or w == record.CORRUPT or w > KW_MAX * 1000:
            reason = None if w is None else "corrupt_record"
            w = self.default_w
        else:
            self._stored_w = w
        self.cap_w = w
        f = self.persist.read_word(ps.FAILSAFE, 0)
        if f == record.CORRUPT or f > KW_MAX * 1000:
            reason = "corrupt_record"
            f = 0
        self.failsafe_w = f
        self._changed()
        return reason

    def per_phase_da(self, w):
        # Watts -> per-phase current in dA, rounded down.
        return w * 100 // self._dv_phases

    def _changed(self):
        if self.on_change:
            self.on_change()

    def write(self, changes, now):
        # Apply a validated write (all keys already checked). Returns False if flash
        # refused something: a failsafe is then left as it was; a lower cap still applies.
        if FAILSAFE in changes:
            w = watts(changes[FAILSAFE]["value"])
            if not self.persist.write_word(ps.FAILSAFE, w):
                return False
            self.failsafe_w = w
        ok = self.write_cap(watts(changes[CAP]["value"]), now) if CAP in changes else True
        self._changed()
        return ok

    def write_cap(self, cap_w, now):
        with self._lock:
            return self._write_cap(cap_w, now)

    def _write_cap(self, cap_w, now):
        # Applies the cap at once. A cap below what flash holds is written before this
        # returns; one above it is left to service(). False if flash refused the write.
        if cap_w != self.cap_w:
            self.cap_w = cap_w
            self._changed_at = now
            self._changed()
        if self._stored_w is not None and cap_w >= self._stored_w:
            if cap_w > self._stored_w and self._pending_since < 0:
                self._pending_since = now
            return True
        w = cap_w
        if self._last_down >= 0 and _elapsed(now, self._last_down) < _FLOOD_MS:
            # Decreases faster than one a second (a flood of distinct values): write 1/8
            # below, so the next ones need no write. Coming back lower is safe; the exact
            # value follows once it has held (service).
            w = cap_w - cap_w // 8
        self._last_down = now
        if not self._store(w):
            return False
        if w < cap_w:
            self._pending_since = now
        return True

    def service(self, now):
        with self._lock:
            self._service(now)

    def _service(self, now):
        # Write an acknowledged cap above flash's once it has held, at the latest after a
        # minute.
        if self._pending_since < 0 or self.cap_w == self._stored_w:
            self._pending_since = -1
            return
        held = _elapsed(now, self._changed_at) >= _RAISE_SETTLE_MS
        if held or _elapsed(now, self._pending_since) >= _RAISE_LATEST_MS:
            self._store(self.cap_w)

    def _store(self, w):
        ok = self.persist.write_word(ps.CAP, w)
        if ok:
            self._stored_w = w
            if w == self.cap_w:
                self._pending_since = -1
        return ok

    def factory_reset(self):
        with self._lock:
            self.cap_w = self.default_w
            self._changed()
            return self._store(self.cap_w)

    def offered_kw(self, offered_da):
        return offered_da * self._dv_phases / 100000

    def installation_kw(self):
        # The most the installation can deliver (max_current, the cable), kW: a cap above
        # it never binds.
        amps = self.max_current
        if self.cable_current and self.cable_current < amps:
            amps = self.cable_current
        return self.offered_kw(int(amps * 10))

    def read(self):
        out = {}
        for key, w in ((CAP, self.cap_w), (FAILSAFE, self.failsafe_w)):
            out[key] = {"value": w / 1000, "unit": "kw", "min": KW_MIN, "max": KW_MAX}
        out[CAP]["effectiveMax"] = self.installation_kw()
        values = (self.max_current, self.voltage, self.phases)
        for i in range(3):
            out[READ_ONLY[i]] = {"value": values[i], "unit": _UNITS[READ_ONLY[i]]}
        return out


def _elapsed(now, since):
    return (now - since) & 0x3FFFFFFF
