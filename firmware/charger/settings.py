# The settings: max_charge_rate (the persisted power ceiling), failsafe_charge_rate (the
# ceiling while a controller is silent), phases_mode (one phase or three, where the
# installation can switch: phases.py) and the installation facts they are enforced with.
# Validation follows docs/protocol.md: all-or-nothing, every failing key listed. Written by
# the uplinks (write) and the worker (service, factory_reset, OCPP's profiles via write);
# the control loop sees only the ceilings (ceiling.py) and the phases' mode.
# A new value reaches the ceilings first and flash second, and a 200 is durable
# (docs/storage.md): a write is in flash before its reply unless it comes in a burst (a
# balancer writing faster than flash should be written); a burst is coalesced upward only
# (a lower value is written before the reply, a higher one once it has stood), so flash
# never holds more than was acknowledged.
from micropython import const
import _thread
from api_text import setting_error
from control import elapsed
import persist as ps
from phases import AUTO
import record

CAP = "max_charge_rate"
# FAILSAFE applies while a controller is silent (docs/protocol.md, the dynamic limit).
FAILSAFE = "failsafe_charge_rate"
# One phase or three: 1, 3 or "auto" (unit "phases"), where the config has phase_switch.
PHASES_MODE = "phases_mode"
WRITABLE = (CAP, FAILSAFE, PHASES_MODE)  # the first two kW, 0-50; all persisted
KW_MIN = 0
KW_MAX = 50
MODES = (1, 3, "auto")  # phases_mode's values, as the API writes them
_MODE_WORDS = (1, 3, AUTO)  # ... and as flash and phases.py keep them, in the same order
READ_ONLY = ("max_current", "supply_voltage", "phases")
_UNITS = ("a", "v", "phases")  # READ_ONLY's, in order

# When a write reaches flash (docs/storage.md says why these values): a value that has
# stood SPELL_MS is in flash. A write after such a quiet spell is written before its reply,
# and so are the first BURST_WRITES in a row after a long one (one more per spell of quiet).
# Beyond that budget, a higher value waits for the worker until it has stood SPELL_MS, at
# the latest _LATEST_MS if the writes never pause.
SPELL_MS = const(5000)
BURST_WRITES = const(10)
_LATEST_MS = const(60000)


def check(key, entry, switchable):
    # None if `entry` may be written to setting `key`, else (status, its setting_error).
    # `switchable`: the installation can switch between one phase and three.
    if key not in WRITABLE:
        if key in READ_ONLY:
            return 422, setting_error(key, "READ_ONLY_SETTING",
                                      key + " is read-only (set by the installer)")
        return 422, setting_error(key, "UNSUPPORTED_SETTING", "unknown setting")
    if key == PHASES_MODE and not switchable:
        return 422, setting_error(key, "UNSUPPORTED_SETTING", "this installation cannot "
                                  "switch phases (its config has no phase_switch)")
    if type(entry) is not dict or "value" not in entry or "unit" not in entry:
        return 400, setting_error(key, "INVALID_REQUEST", "expected {value, unit}")
    if len(entry) != 2:
        return 400, setting_error(key, "INVALID_REQUEST", "only value and unit are allowed")
    unit = entry["unit"]
    want = "phases" if key == PHASES_MODE else "kw"
    if type(unit) is not str or unit.lower() != want:
        return 422, setting_error(key, "UNSUPPORTED_UNIT", "unit must be " + want,
                                  {"providedUnit": unit, "supportedUnits": [want]})
    value = entry["value"]
    if key == PHASES_MODE:
        if _mode_word(value) is None:
            return 422, setting_error(key, "INVALID_SETTING_VALUE", "value must be 1, 3 or auto",
                                      {"supportedValues": list(MODES)})
        return None
    if type(value) not in (int, float) or value - value != 0:
        return 422, setting_error(key, "INVALID_SETTING_VALUE", "value must be a finite number")
    if not KW_MIN <= value <= KW_MAX:
        return 422, setting_error(key, "SETTING_OUT_OF_RANGE",
                                  "value outside [%s, %s] kw" % (KW_MIN, KW_MAX),
                                  {"value": value, "min": KW_MIN, "max": KW_MAX, "unit": "kw"})
    return None


def _mode_word(value):
    # phases_mode as flash keeps it, or None if `value` is not one of MODES (true is not 1).
    for i in range(len(MODES)):
        if value == MODES[i] and type(value) is type(MODES[i]):
            return _MODE_WORDS[i]
    return None


def mode_name(word):
    # phases_mode as the API shows it: 1, 3 or "auto".
    return MODES[_MODE_WORDS.index(word)]


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


class _Kept:
    # One persisted setting, as its word (W, or phases_mode's word), and what flash holds
    # of it. `ordered`: a lower value is the safer one (a power ceiling), so a burst may keep
    # only a raise out of flash; otherwise every change in a burst waits alike.
    def __init__(self, key, default_w, ordered=True):
        self.key = key  # its persist key
        self.ordered = ordered
        self.default_w = default_w  # what a boot gives without a valid record
        self.w = default_w  # what the ceilings follow
        self.acked = default_w  # the value of the last write, in the order of Settings._lock
        self.stored = None  # what flash holds; None: no valid record (a boot gives the default)
        self.changed_at = 0  # when `acked` last changed
        self.pending_since = -1  # when flash was left below `acked` (service writes it)
        self.last_down = -1  # when a decrease beyond the budget was last written

    def boot_w(self):
        # What a boot would come back with.
        return self.default_w if self.stored is None else self.stored

    def valid(self, w):
        return w <= KW_MAX * 1000 if self.ordered else w in _MODE_WORDS


class Settings:
    def __init__(self, config, persist, ceiling):
        self.voltage = config["supply_voltage"]
        self.phases = int(config["phases"])  # the installation's (phases in use: ceiling)
        self.switchable = bool(config.get("phase_switch"))
        self.max_current = config["max_current"]
        self.cable_current = int(config.get("cable_current") or 0)
        self.default_w = watts(float(config.get("default_max_charge_rate", KW_MAX)))
        self._dv = decivolts(self.voltage)  # 0.1 V
        self.ceiling = ceiling  # converts W with the phases in use (ceiling.py)
        ceiling.dv = self._dv
        self.persist = persist
        self.on_change = None  # f(): the ceilings and the phases follow (agent.py)
        self.cap = _Kept(ps.CAP, self.default_w)
        # failsafe_charge_rate: 0 by default, a dead controller pauses charging (protocol.md)
        self.failsafe = _Kept(ps.FAILSAFE, 0)
        # phases_mode: auto by default (three phases unless a power ceiling needs one)
        self.mode = _Kept(ps.PHASES_MODE, AUTO, ordered=False)
        self._kept = ((CAP, self.cap), (FAILSAFE, self.failsafe)) + \
            (((PHASES_MODE, self.mode),) if self.switchable else ())
        self._budget = ps.Budget(BURST_WRITES, SPELL_MS)
        # One writer of the settings' flash at a time (write, service, factory_reset): each
        # decides from what flash really holds, and the worker never writes a value a
        # request has since replaced (docs/storage.md, "the settings lock").
        self._lock = _thread.allocate_lock()

    @property
    def cap_w(self):
        return self.cap.w

    @property
    def failsafe_w(self):
        return self.failsafe.w

    @property
    def phases_mode(self):
        # AUTO, 1 or 3 (phases.py's words)
        return self.mode.w

    def load(self):
        # Read the settings before any current is offered. Returns the revert reason, if any.
        reason = None
        for name, k in self._kept:
            w = self.persist.read_word(k.key, k.default_w)  # none: the default, as a boot's
            if w == record.CORRUPT or not k.valid(w):
                reason = "corrupt_record"
            else:
                k.stored = w
            k.w = k.acked = k.boot_w()
        self._changed()
        return reason

    def per_phase_da(self, w):
        # Watts -> per-phase current in dA with the phases in use, rounded down.
        return self.ceiling.per_phase_da(w)

    def _changed(self):
        if self.on_change:
            self.on_change()

    def write(self, changes, now):
        # Apply a validated write (all keys already checked); True once it is as durable as
        # docs/storage.md promises. False if flash refused something: a lower value still
        # applies (until a restart), a higher one is taken back.
        new = []
        for name, k in self._kept:
            if name in changes:
                v = changes[name]["value"]
                new.append((k, _mode_word(v) if name == PHASES_MODE else watts(v)))
        # On the ceilings before anything can wait (the lock, flash): a lower value must
        # reach the pilot at once, and a raise is never held back by flash.
        for k, w in new:
            k.w = w
        self._changed()
        with self._lock:
            durable = self._budget.spend(now) if self._needs_flash(new) else False
            ok = True
            for k, w in new:
                ok = self._put(k, w, durable, now) and ok
        return ok

    def _needs_flash(self, new):
        for k, w in new:
            if w != k.stored:
                return True
        return False

    def _put(self, k, w, durable, now):
        # One key of a write, under the lock: flash written as the budget allows. Unless
        # flash refuses a write (False), flash is left at or below `w`, the value answered.
        before = k.acked
        k.w = k.acked = w  # in the lock's order: the last write answered is the one kept
        if w != before:
            k.changed_at = now
        if w == k.stored:
            k.pending_since = -1
            return True
        if durable:  # within the budget: in flash before the reply, raise or not
            if self._store(k, w):
                return True
            if w > before or not k.ordered:  # a raise (a mode) flash refused changes nothing
                k.w = min(k.w, before) if k.ordered else before
                k.acked = before
                self._changed()
            return False
        if not k.ordered or w >= k.boot_w():
            # a raise (or any mode change) beyond the budget: written once it has stood
            if k.pending_since < 0:
                k.pending_since = now
            return True
        # A decrease beyond the budget, below what flash holds: written before the reply.
        # Decreases within a spell of the last one (a flood, or a balancer stepping down)
        # write 1/8 below, so the next ones need no write; the exact value follows once it
        # has stood a spell.
        flood = k.last_down >= 0 and elapsed(now, k.last_down) < SPELL_MS
        low = w - w // 8 if flood else w
        k.last_down = now
        if not self._store(k, low):
            return False
        if low < w and k.pending_since < 0:
            k.pending_since = now
        return True

    def service(self, now):
        # Worker: a value left above flash's is written once it has stood a spell, at the
        # latest _LATEST_MS after it was acknowledged.
        with self._lock:
            self._budget.refill(now)
            for name, k in self._kept:
                if k.pending_since < 0:
                    continue
                if k.acked == k.stored:
                    k.pending_since = -1
                elif elapsed(now, k.changed_at) >= SPELL_MS or \
                        elapsed(now, k.pending_since) >= _LATEST_MS:
                    self._store(k, k.acked)

    def _store(self, k, w):
        # Under the lock.
        ok = self.persist.write_word(k.key, w)
        if ok:
            k.stored = w
            if w == k.acked:
                k.pending_since = -1
        return ok

    def factory_reset(self):
        # Worker: the cap back to the installation's default, in flash at once.
        with self._lock:
            k = self.cap
            k.w = k.acked = k.default_w
            self._changed()
            return self._store(k, k.w)

    def offered_kw(self, offered_da, phases=0):
        # dA per phase -> kW, on the phases in use (or on `phases`).
        return offered_da * self._dv * (phases or self.ceiling.phases) / 100000

    def installation_kw(self):
        # The most the installation can deliver (max_current, the cable, on all its
        # phases), kW: a cap above it never binds.
        amps = self.max_current
        if self.cable_current and self.cable_current < amps:
            amps = self.cable_current
        return self.offered_kw(int(amps * 10), self.phases)

    def read(self):
        out = {}
        for key, w in ((CAP, self.cap_w), (FAILSAFE, self.failsafe_w)):
            out[key] = {"value": w / 1000, "unit": "kw", "min": KW_MIN, "max": KW_MAX}
        out[CAP]["effectiveMax"] = self.installation_kw()
        values = (self.max_current, self.voltage, self.phases)
        for i in range(3):
            out[READ_ONLY[i]] = {"value": values[i], "unit": _UNITS[i]}
        if self.switchable:
            out[PHASES_MODE] = {"value": mode_name(self.phases_mode),
                                "unit": "phases", "options": list(MODES)}
        return out
