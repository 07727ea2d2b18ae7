"""Put the agent on an ESP32 with mpremote (make deploy), or write the exact tree (--dry-run).

  python -m tools.device.deploy --port /dev/ttyUSB0 --config garage.local.json
  python -m tools.device.deploy --dry-run build/deploy --config garage.local.json

The tree: main.py ("import esp32_main"), lib/*.mpy (firmware and the board, compiled by
mpy-cross), config.json. umqtt.simple and requests are frozen into the MicroPython
firmware. Only files whose SHA-256 differs from the board's copy are sent.
"""
import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

from tools.paths import FIRMWARE, ROOT, board_dir

BOARDS = {"esp32": ("esp32_board.py", "esp32_main.py")}  # in boards/<name>/
MAIN = b"import esp32_main\n"
_HASHER = ("import os, hashlib, binascii\n"
           "def walk(d):\n"
           " for e in os.ilistdir(d):\n"
           "  p = (d + '/' + e[0]) if d != '/' else '/' + e[0]\n"
           "  if e[1] == 0x4000:\n"
           "   walk(p)\n"
           "  else:\n"
           "   h = hashlib.sha256()\n"
           "   with open(p, 'rb') as f:\n"
           "    h.update(f.read())\n"
           "   print(p, binascii.hexlify(h.digest()).decode())\n"
           "walk('/')\n")


class DeployError(Exception):
    pass


def mpy_cross_version():
    out = subprocess.run(["mpy-cross", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"mpy v(\d+)\.(\d+)", out)
    if not m:
        raise DeployError("mpy-cross not found: run make deploy (it installs it)")
    return int(m.group(1)), int(m.group(2))


def build_tree(out, board, config, march):
    """Write the exact tree that goes on the board into `out`."""
    if board not in BOARDS:
        raise DeployError("unknown board %r (known: %s)" % (board, ", ".join(BOARDS)))
    lib = os.path.join(out, "lib")
    os.makedirs(lib, exist_ok=True)
    sources = sorted(glob.glob(os.path.join(FIRMWARE, "*.py")))
    sources += [os.path.join(board_dir(board), f) for f in BOARDS[board]]
    for src in sources:
        dst = os.path.join(lib, os.path.splitext(os.path.basename(src))[0] + ".mpy")
        res = subprocess.run(["mpy-cross", "-march=" + march, "-o", dst, src],
                             capture_output=True, text=True)
        if res.returncode:
            raise DeployError("mpy-cross %s: %s" % (src, res.stderr.strip()))
    with open(os.path.join(out, "main.py"), "wb") as f:
        f.write(MAIN)
    if config:
        shutil.copy(config, os.path.join(out, "config.json"))
    return out


def mpremote(port, *args, capture=True):
    try:
        res = subprocess.run(["mpremote", "connect", port, *args], capture_output=capture,
                             text=True, timeout=120)
    except FileNotFoundError:
        raise DeployError("mpremote not found: run make deploy (it installs it)")
    except subprocess.TimeoutExpired:
        raise DeployError("no answer from the board on %s" % port)
    if res.returncode:
        msg = (res.stderr or res.stdout or "").strip().splitlines()
        raise DeployError("mpremote on %s failed: %s" % (port, msg[-1] if msg else res.returncode))
    return res.stdout


def check_mpy_version(port):
    out = mpremote(port, "exec", "import sys; print(sys.implementation._mpy)")
    value = int(out.strip().splitlines()[-1])
    board = (value & 0xFF, (value >> 8) & 3)
    ours = mpy_cross_version()
    if board[0] != ours[0] or board[1] < ours[1]:
        raise DeployError("the board loads .mpy v%d.%d, mpy-cross emits v%d.%d: install the "
                          "mpy-cross matching the board's MicroPython" % (board + ours))


def remote_hashes(port):
    out = mpremote(port, "exec", _HASHER)
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            found[parts[0]] = parts[1]
    return found


def deploy(port, tree):
    check_mpy_version(port)
    have = remote_hashes(port)
    sent = 0
    if "/lib" not in {os.path.dirname(p) for p in have}:
        try:
            mpremote(port, "mkdir", ":lib")
        except DeployError:
            pass  # already there, and empty
    for dirpath, _, files in os.walk(tree):
        for name in sorted(files):
            local = os.path.join(dirpath, name)
            remote = "/" + os.path.relpath(local, tree).replace(os.sep, "/")
            with open(local, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            if have.get(remote) != digest:
                mpremote(port, "cp", local, ":" + remote)
                print("deploy: %s" % remote)
                sent += 1
    print("deploy: %d file(s) changed, resetting the board" % sent)
    mpremote(port, "reset")
    return sent


def main(argv=None):
    p = argparse.ArgumentParser(prog="make deploy PORT=... [BOARD=esp32] [CONFIG=...]",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--port", help="serial port of the board, e.g. /dev/ttyUSB0")
    p.add_argument("--board", default="esp32", choices=sorted(BOARDS))
    p.add_argument("--config", help="the installation's config file (never committed)")
    p.add_argument("--march", default="xtensawin", help="mpy-cross architecture")
    p.add_argument("--dry-run", metavar="DIR", help="write the tree to DIR instead")
    a = p.parse_args(argv)
    try:
        if a.config and not os.path.exists(a.config):
            raise DeployError("config %s not found (template: boards/esp32/config.example.json)"
                              % a.config)
        if a.dry_run:
            if os.path.isdir(a.dry_run):
                shutil.rmtree(a.dry_run)
            build_tree(a.dry_run, a.board, a.config, a.march)
            print("deploy: tree written to %s" % a.dry_run)
            return 0
        if not a.port:
            raise DeployError("no PORT given: make deploy PORT=/dev/ttyUSB0 CONFIG=my.json")
        with tempfile.TemporaryDirectory() as tmp:
            deploy(a.port, build_tree(tmp, a.board, a.config, a.march))
        return 0
    except DeployError as e:
        print("deploy: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
