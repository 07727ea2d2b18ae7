"""Releases for the update tests, made by the host tool (tools/ota.py) with a fresh key, and a
download server for them: a folder served over HTTP/1.0 on loopback that logs every GET and
may serve a file other than the one signed (a hash or size the manifest does not say) or
serve it slowly (to cut the power in the middle of a download)."""
import json
import os
import subprocess

from tools import ota
from tools.bench.update_server import UpdateServer


def compiled(folder, modules):
    """{name: source} compiled by mpy-cross into folder/name.mpy (nothing else in it)."""
    os.makedirs(folder, exist_ok=True)
    for name, source in modules.items():
        src = os.path.join(folder, name + ".py")
        with open(src, "w") as f:
            f.write(source)
        subprocess.run(["mpy-cross", "-o", os.path.join(folder, name + ".mpy"), "-s",
                        name + ".py", src], check=True)
        os.remove(src)
    return folder


# Versions that fail, as bundles of the one module each replaces (the rest comes from the
# deployed tree): at import (sim_main imports the agent), at boot (the MQTT uplink cannot
# be built), and one that runs but never reaches its broker.
FAILING = {
    "import_error": {"agent": "import no_such_module\n"},
    "crash": {"mqtt_uplink": "class MqttUplink:\n"
                             "    def __init__(self, cfg, board, agent):\n"
                             "        raise RuntimeError('0.3.0 crashes at boot')\n"},
    "no_uplink": {"mqtt_uplink": "import door\n\n\n"
                                 "class MqttUplink:\n"
                                 "    def __init__(self, cfg, board, agent):\n"
                                 "        self.agent = agent\n"
                                 "        self.reset = None\n"
                                 "        self.quiet = (OSError,)\n\n"
                                 "    def run(self):\n"
                                 "        door.run(self, 'uplink')\n\n"
                                 "    def connect(self):\n"
                                 "        raise OSError('0.3.0 never reaches its broker')\n\n"
                                 "    def serve(self):\n"
                                 "        pass\n\n"
                                 "    def close(self):\n"
                                 "        pass\n"},
}


class Releases:
    """Signed releases in `folder`: self.release(name) is what an update request carries
    besides the url (its manifest and signature), self.url(name) where the server has it."""

    def __init__(self, folder, sim_tree=False):
        self.folder = str(folder)
        self.key = ota.rsa.generate_private_key(public_exponent=65537, key_size=3072)
        self.stranger = ota.rsa.generate_private_key(public_exponent=65537, key_size=3072)
        self.keys = [ota.public_text(self.key)]
        self.releases = {}
        # A harmless bundle: one module nothing imports (the new version runs the code it
        # ran before; what is tested is the update around it).
        note = compiled(os.path.join(self.folder, "src-note"), {"ota_note": "NOTE = 1\n"})
        self.bundle("note.tar", note, "0.3.0")
        self.bundle("note-040.tar", note, "0.4.0", path="note.tar")
        self.bundle("note-010.tar", note, "0.1.0", path="note.tar")
        self.sign("image.bin", "0.3.0", "image", data=b"\xe9" + bytes(300))
        note_data = open(self._path("note.tar"), "rb").read()
        # Served as the file, signed as another: each half is refused when it arrives.
        flipped = note_data[:700] + bytes((note_data[700] ^ 1,)) + note_data[701:]
        self.release_for("flipped.tar", "note.tar", flipped)
        self.release_for("short.tar", "note.tar", note_data[:-512])
        self.release_for("long.tar", "note.tar", note_data + bytes(512))
        self.stranger_release = ota.release(self.stranger, self._path("note.tar"), "0.3.0",
                                            "bundle")
        if sim_tree:
            self.sim_tree()

    def sim_tree(self):
        # make sim's charger as a bundle, and the versions that fail.
        ota.make_bundle(self._path("sim.tar"), board="sim")
        self.sign("sim.tar", "0.3.0", "bundle")
        for what, modules in FAILING.items():
            src = compiled(os.path.join(self.folder, "src-" + what), modules)
            self.bundle(what + ".tar", src, "0.3.0")

    def _path(self, name):
        return os.path.join(self.folder, name)

    def bundle(self, name, source, version, path=None):
        if path is None:
            ota.make_bundle(self._path(name), source=source)
        self.releases[name] = ota.sign(self.key, self._path(path or name), version, "bundle")
        self.releases[name]["file"] = path or name

    def sign(self, name, version, kind, data=None):
        if data is not None:
            with open(self._path(name), "wb") as f:
                f.write(data)
        self.releases[name] = ota.release(self.key, self._path(name), version, kind)
        self.releases[name]["file"] = name

    def release_for(self, name, signed, data):
        # `data` served under `name`, with the release of `signed`.
        with open(self._path(name), "wb") as f:
            f.write(data)
        self.releases[name] = dict(self.releases[signed], file=name)

    def release(self, name):
        r = self.releases[name]
        return {"manifest": r["manifest"], "signature": r["signature"]}

    def write_release_file(self, name):
        """FILE.ota.json beside the file, as tools.ota sign writes it (OCPP's location)."""
        path = self._path(self.releases[name]["file"]) + ".ota.json"
        with open(path, "w") as f:
            json.dump(self.release(name), f)
        return os.path.basename(path)


class Server(UpdateServer):
    """The folder over HTTP/1.0 on a free loopback port (make sim's server)."""

    def __init__(self, folder):
        super().__init__(folder, port=0)
