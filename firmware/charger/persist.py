# The one storage layer: every persisted value by name, each written only when its bytes
# change, atomically by the board's store (temp file + rename, or NVS), from the network
# side only. A failing write is reported (persist.failed, the state's `storage` field and a
# storage.failed event), never raised into the request or the loop that asked for it.
# What each key costs in flash wear is in docs/storage.md; Budget is how often a writer may
# write at its own pace.
import gc
import _thread
from control import elapsed, later
import record

# Keys (ESP32 NVS keys are at most 15 characters).
CAP = "cap"  # max_charge_rate, W (word)
FAILSAFE = "failsafe"  # failsafe_charge_rate, W (word)
PHASES_MODE = "phases_mode"  # phases_mode: 0 auto, 1 or 3 (word; settings.py)
IN_CHARGE = "in_charge"  # a controller sets a dynamic limit (word 0/1; docs/protocol.md)
PAUSE = "pause"  # the session is paused by idle (word 0/1)
ACTIONS = "actions"  # the action journal (blob)
ENERGY = "energy"  # the lifetime energy register, 10 Wh (word)
SESSION = "session"  # the open session: id and lifetime energy at its start (blob)
OCPP_CONFIG = "ocpp_cfg"  # OCPP configuration keys a CSMS changed (blob)
OCPP_PROFILES = "ocpp_prof"  # ChargePointMaxProfile / TxDefaultProfile charging profiles (blob)
OCPP_TX = "ocpp_tx"  # the open transaction and the queued Start/StopTransaction (blob)
OCPP_AVAILABILITY = "ocpp_avail"  # taken out of service by ChangeAvailability (word 0/1)


class Persist:
    def __init__(self, store):
        self.store = store
        self.writes = 0
        self.by_key = {}  # writes per key since boot (diagnostics)
        self.failed = None  # the key whose last write failed, until a write succeeds
        self.on_failure = None  # f(key, error): the agent's storage.failed event
        self._last = {}  # key -> bytes as last read or written
        self._lock = _thread.allocate_lock()  # requests and the worker both write

    def read_word(self, key, missing=None):
        # The value; `missing` (taken as what flash holds) when there is none; CORRUPT.
        data = self._read(key)
        if data is None and missing is not None:
            self._last[key] = record.word(missing)
            return missing
        return record.unword(data)

    def read_blob(self, key):
        return record.unblob(self._read(key))

    def write_word(self, key, value):
        return self._write(key, record.word(value))

    def write_blob(self, key, body):
        # The record is built once more after a collection where the heap has no room for it
        # (fragmented during a burst of requests); with none even then, a failed write like
        # any other: reported, never raised into the request or the loop that asked for it.
        try:
            data = record.blob(body)
        except MemoryError:
            gc.collect()
            try:
                data = record.blob(body)
            except MemoryError as e:
                return self.refused(key, e)
        return self._write(key, data)

    def refused(self, key, error):
        # A write of `key` that did not happen: False, after saying so (persist.failed,
        # on_failure's storage.failed event where the heap has room for it).
        self.failed = key
        if self.on_failure:
            try:
                self.on_failure(key, error)
            except MemoryError:  # state.storage still says "failed"
                pass
        return False

    def _read(self, key):
        data = self.store.read(key)
        if data is not None:
            self._last[key] = data
        return data

    def _write(self, key, data):
        # True once the bytes are in flash (or were already).
        with self._lock:
            if self._last.get(key) == data:
                return True
            try:
                self.store.write(key, data)
            except (OSError, MemoryError) as e:
                return self.refused(key, e)
            self.writes += 1
            self.by_key[key] = self.by_key.get(key, 0) + 1
            self._last[key] = data
            if self.failed == key:
                self.failed = None
            return True


class Budget:
    # How many writes may go to flash at once: `size` in a row after a long quiet spell, and
    # one more for each `spell_ms` without one. Every write asked for restarts the quiet
    # spell, so a writer that never pauses that long gets no more than the first `size`
    # (docs/storage.md). Its owner's lock guards it; refill() from a periodic loop keeps a
    # spell longer than the board's clock wraps (12 days) from counting as a short one.
    def __init__(self, size, spell_ms):
        self.size = size
        self.spell_ms = spell_ms
        self.left = size
        self._at = None  # when the quiet spell began (the last write asked for)

    def refill(self, now):
        if self._at is None or self.left >= self.size:
            return
        spells = elapsed(now, self._at) // self.spell_ms
        if spells:
            self.left = min(self.size, self.left + spells)
            self._at = later(self._at, spells * self.spell_ms)

    def spend(self, now):
        # A write is asked for: True (and one fewer left) if it may go to flash now.
        self.refill(now)
        self._at = now
        if self.left <= 0:
            return False
        self.left -= 1
        return True
