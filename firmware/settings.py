# The settings: max_charge_rate (the persisted power ceiling) and the installation facts
# it is enforced with. Validation follows charger-api.md: all-or-nothing, every failing
# key listed. The cap reaches the control core first and flash second.
import pilot
import record

CAP = "max_charge_rate"
CAP_MIN = 0
CAP_MAX = 50
READ_ONLY = ("max_current", "supply_voltage", "phases")
_UNITS = {"max_current": "a", "supply_voltage": "v", "phases": "phases"}
LIMIT_NAMES = ("max_charge_rate", "max_current", "cable", "pilot")


def _error(key, code, message, details=None, status=422):
    return {"setting": key, "code": code, "message": message, "details": details or {},
            "status": status}


def check(key, entry):
    # The error for one key of a write, or None if it may be applied.
    if key != CAP:
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
    if not CAP_MIN <= value <= CAP_MAX:
        return _error(key, "SETTING_OUT_OF_RANGE", "value outside [0, 50] kw",
                      {"value": value, "min": CAP_MIN, "max": CAP_MAX, "unit": "kw"})
    return None


class Settings:
    def __init__(self, config, store, control):
        self.voltage = int(config["supply_voltage"])
        self.phases = int(config["phases"])
        self.max_current = int(config["max_current"])
        self.cable_current = int(config.get("cable_current") or 0)
        self.default_w = int(round(float(config.get("default_max_charge_rate", CAP_MAX)) * 1000))
        self.store = store
        self.control = control
        self.cap_w = self.default_w
        self.limited_by = 0
        self.flash_writes = 0
        self._stored = None  # (cap_w, paused) as last written, None if not known

    def load(self):
        # Read the record before any current is offered. Returns the revert reason, if any.
        raw = self.store.read(record.KEY)
        rec = record.decode(raw)
        if rec is None:
            rec = (self.default_w, False)
        else:
            self._stored = rec
        self.cap_w = rec[0]
        self.control.paused = rec[1]
        self._apply()
        return "corrupt_record" if raw is not None and self._stored is None else None

    def limit_da(self):
        # The binding current limit (dA, rounded down) and what binds it.
        per_phase = self.voltage * self.phases
        limits = (self.cap_w * 10 // per_phase, self.max_current * 10,
                  self.cable_current * 10 if self.cable_current else pilot.MAX_CURRENT,
                  pilot.MAX_CURRENT)
        best = 0
        for i in range(1, 4):
            if limits[i] < limits[best]:
                best = i
        return limits[best], best

    def _apply(self):
        limit, self.limited_by = self.limit_da()
        self.control.limit_da = limit

    def write_cap(self, cap_w):
        # Takes effect on the pilot at the next tick; flash only when the value changed.
        if cap_w == self.cap_w:
            return
        self.cap_w = cap_w
        self._apply()
        self.persist(self.control.paused)

    def persist(self, paused):
        rec = (self.cap_w, bool(paused))
        if rec != self._stored:
            self.store.write(record.KEY, record.encode(rec[0], rec[1]))
            self.flash_writes += 1
            self._stored = rec

    def factory_reset(self):
        self.cap_w = self.default_w
        self._apply()
        self.persist(self.control.paused)

    def offered_kw(self, offered_da):
        return offered_da * self.voltage * self.phases / 10000

    def read(self):
        out = {CAP: {"value": self.cap_w / 1000, "unit": "kw", "min": CAP_MIN, "max": CAP_MAX}}
        values = (self.max_current, self.voltage, self.phases)
        for i in range(3):
            out[READ_ONLY[i]] = {"value": values[i], "unit": _UNITS[READ_ONLY[i]]}
        return out
