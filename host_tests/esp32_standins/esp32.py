# Stand-in for the ESP32's esp32 module: NVS kept in nvs.json, committed values only.
import json
import _world

_FILE = "nvs.json"


class NVS:
    def __init__(self, namespace):
        self.ns = namespace
        try:
            with open(_FILE) as f:
                self.saved = json.load(f)
        except OSError:
            self.saved = {}
        self.pending = dict(self.saved)

    def set_blob(self, key, data):
        _world.log("nvs_set", key)
        self.pending[key] = bytes(data).decode()

    def get_blob(self, key, buf):
        _world.log("nvs_get", key)
        if key not in self.saved:
            raise OSError(-0x1102)  # ESP_ERR_NVS_NOT_FOUND
        data = self.saved[key].encode()
        buf[:len(data)] = data
        return len(data)

    def commit(self):
        _world.log("nvs_commit")
        self.saved = dict(self.pending)
        with open(_FILE, "w") as f:
            json.dump(self.saved, f)
