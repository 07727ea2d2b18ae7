# Stand-in for the ESP32's esp32 module: NVS kept in nvs.json, committed values only. As in
# ESP-IDF, a key has a type: get_i32 does not find a blob and get_blob does not find an i32.
import json
import _world

_FILE = "nvs.json"
_NOT_FOUND = -0x1102  # ESP_ERR_NVS_NOT_FOUND


class NVS:
    def __init__(self, namespace):
        self.ns = namespace
        try:
            with open(_FILE) as f:
                self.saved = json.load(f)  # key -> ["i32", int] or ["blob", text]
        except OSError:
            self.saved = {}
        self.pending = dict(self.saved)

    def _get(self, key, kind):
        _world.log("nvs_get", key)
        entry = self.saved.get(key)
        if entry is None or entry[0] != kind:
            raise OSError(_NOT_FOUND)
        return entry[1]

    def set_i32(self, key, value):
        _world.log("nvs_set", key)
        self.pending[key] = ["i32", value]

    def get_i32(self, key):
        return self._get(key, "i32")

    def set_blob(self, key, data):
        _world.log("nvs_set", key)
        self.pending[key] = ["blob", bytes(data).decode()]

    def get_blob(self, key, buf):
        data = self._get(key, "blob").encode()
        buf[:len(data)] = data
        return len(data)

    def commit(self):
        # Atomic, as NVS is per entry: a power cut leaves the old value or the new one.
        _world.log("nvs_commit")
        self.saved = dict(self.pending)
        with open(_FILE + ".tmp", "w") as f:
            json.dump(self.saved, f)
        import os
        os.rename(_FILE + ".tmp", _FILE)


# esp32.Partition over the bench's flash model (tools/bench/flash_model.py): the flash in
# MicroPython's OTA layout, kept in flash.bin so that a process restart is a reboot (the
# bootloader model picks the running partition when first asked). App partitions of
# STANDIN_APP_KB (the OTA table's 0x180000 by default); the test writes the first image.
# Built when first asked for (the module's __getattr__): the model is compiled from source,
# about 20 KB of heap that a 56K boot that never updates its image must not pay for (the
# board's own esp32.Partition is in flash).
def _partition_class():
    import os
    import sys
    sys.path.append(__file__.rsplit("/", 1)[0] + "/../../tools/bench")
    import flash_model
    app = int(os.getenv("STANDIN_APP_KB") or "1536") * 1024
    medium = flash_model.FileMedium("flash.bin", flash_model.EspFlash.size_for(app))
    return flash_model.partition_class(flash_model.EspFlash(medium, app))


def __getattr__(name):
    if name != "Partition":
        raise AttributeError(name)
    cls = globals()["Partition"] = _partition_class()
    return cls
