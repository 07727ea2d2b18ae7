"""Put micropython-lib's umqtt/simple.py into build/lib for the host's micropython.

PyPI's micropython-umqtt.simple is an old upip-format sdist that pip cannot install, but
`pip download --no-clean` unpacks it before giving up; the module is copied from there.
On the ESP32 the same module is frozen into the MicroPython firmware.
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = os.path.join(ROOT, "build", "lib", "umqtt")


def main():
    if os.path.exists(os.path.join(DEST, "simple.py")):
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TMPDIR=tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-clean",
                        "--no-binary", ":all:", "-d", os.path.join(tmp, "dl"),
                        "micropython-umqtt.simple==1.3.4"],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        found = glob.glob(os.path.join(tmp, "**", "umqtt", "simple.py"), recursive=True)
        if not found:
            print("fetch_umqtt: could not unpack micropython-umqtt.simple from PyPI",
                  file=sys.stderr)
            return 1
        os.makedirs(DEST, exist_ok=True)
        shutil.copy(found[0], os.path.join(DEST, "simple.py"))
        open(os.path.join(DEST, "__init__.py"), "w").close()
    print("fetch_umqtt: build/lib/umqtt/simple.py ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
