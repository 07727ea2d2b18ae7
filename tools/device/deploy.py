"""Put the agent on an ESP32 with mpremote (make deploy), or write the exact tree (--dry-run).

  python -m tools.device.deploy --port /dev/ttyUSB0 --config garage.local.json
  python -m tools.device.deploy --dry-run build/deploy --config garage.local.json

The tree: main.py (MAIN: the boot layer of updates, then "import esp32_main"), lib/*.mpy
(what boards/esp32/manifest.py names, the list an image with the agent frozen in freezes:
the agent and the pinned micropython-lib packages it uses, umqtt.simple 1.7.0, requests
0.10.2 and ntptime, and the board's modules, compiled by mpy-cross), config.json, and every
file the config names (keys ending in _file, such as ca_file), taken from beside the config
file and put at the same path on the board, as they are (a CA in PEM or DER: the agent reads
both). The official v1.28.0 image freezes the same library versions, and a frozen module is
imported before /lib: the copies in lib/ serve an image that lacks them. Only files whose
SHA-256 differs from the board's copy are sent.

Nothing is written anywhere until the config has passed the firmware's own checks (the ones
the board runs at boot) and the board's pin checks, has no template placeholder left, and
each CA it names (ca_file, ocpp.ca_file) holds a certificate.
--dry-run writes only into a new or empty directory, or one an earlier --dry-run made; it
replaces the files it wrote there before and never deletes or overwrites anything else
(--force: write into any directory, still deleting and overwriting nothing).
"""
import argparse
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile

from tools import ca
from tools.device import manifest
from tools.device.ports import port_problem
from tools.json_input import loads
from tools.paths import board_dir, board_manifest, cpython_paths, firmware_sources

# Per board: the module whose check_pins() holds the board's config checks (importable
# without hardware). What goes into lib/ is the board's manifest (sources()).
BOARDS = {"esp32": "esp32_pins"}
# main.py: the app folder of an update first on the path (ota_boot, docs/ota.md, "The
# bundle form"), then the charger; anything raised at boot resets the board, since the REPL
# would stop an update's boot count and its rollback (a Ctrl-C still reaches the REPL).
MAIN = b"""try:
    import sys
    import ota_boot
    app = ota_boot.app_path("/")
    if app:
        sys.path.insert(0, app)
    import esp32_main
except Exception as e:
    import machine
    sys.print_exception(e)
    machine.reset()
"""
PLACEHOLDER = "CHANGE-ME"  # what boards/esp32/config.example.json leaves to fill in
TEMPLATE = "boards/esp32/config.example.json"
MARKER = ".deploy-tree"  # in a --dry-run directory: the files deploy wrote there, one a line
_HASHER = ("import os, hashlib, binascii\n"
           "def walk(d):\n"
           " for e in os.ilistdir(d):\n"
           "  p = (d + '/' + e[0]) if d != '/' else '/' + e[0]\n"
           "  if e[1] == 0x4000:\n"
           "   print(p + '/')\n"
           "   walk(p)\n"
           "  else:\n"
           "   h = hashlib.sha256()\n"
           "   with open(p, 'rb') as f:\n"
           "    h.update(f.read())\n"
           "   print(p, binascii.hexlify(h.digest()).decode())\n"
           "walk('/')\n")


class DeployError(Exception):
    pass


def warn(text):
    print("deploy: warning: %s" % text, file=sys.stderr)


# -- the config, checked on this computer with the board's own code


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def board_checks(board):
    """The firmware's config check and the board's pin check: the very code the board runs."""
    cpython_paths()  # what it imports (ota_manifest reads the update keys)
    firmware_config = _load("_deploy_firmware_config", firmware_sources()["config"])
    name = BOARDS[board]
    pins = _load("_deploy_" + name, os.path.join(board_dir(board), name + ".py"))
    return firmware_config.check, pins.check_pins


def _placeholders(value, path=""):
    """Dotted names of every string still holding the template's placeholder."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _placeholders(v, path + "." + str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _placeholders(v, "%s[%d]" % (path, i))]
    return [path.lstrip(".")] if isinstance(value, str) and PLACEHOLDER in value else []


def load_config(path, board):
    """The installation's config, refused with every problem it has, as the board would."""
    if not os.path.isfile(path):
        raise DeployError("config %s not found (template: %s)" % (path, TEMPLATE))
    try:
        with open(path, encoding="utf-8") as f:
            cfg = loads(f.read())
    except UnicodeDecodeError:
        raise DeployError("config %s is not UTF-8 text" % path)
    except ValueError as e:
        raise DeployError("config %s is not valid JSON: %s" % (path, e))
    check, check_pins = board_checks(board)
    errors = check(cfg)
    if not errors:
        errors = check_pins(cfg)
    errors += ["%s is still %s from the template" % (name, PLACEHOLDER)
               for name in _placeholders(cfg)]
    if errors:
        raise DeployError("config %s: %s" % (path, "; ".join(errors)))
    return cfg


def links(cfg):
    """", broker A, B", ", OCPP URL", ", HTTP port N": each uplink of a checked config."""
    firmware_config = _load("_deploy_firmware_config", firmware_sources()["config"])
    out = ""
    for name in firmware_config.uplinks(cfg):
        if name == "mqtt":
            broker = cfg["broker"]
            out += ", broker " + (broker if isinstance(broker, str) else ", ".join(broker))
        elif name == "ocpp":
            out += ", OCPP " + cfg["ocpp"]["url"]
        elif name == "http":
            out += ", HTTP port %d" % cfg["http"].get("port", firmware_config.HTTP_PORT)
    return out


def named_files(cfg, config_path):
    """{path on the board: file here} for every `*_file` key (at the top or in a block such as
    `ocpp`): found beside the config; a CA (`ca_file`) must hold a certificate."""
    files = {}
    here = os.path.dirname(os.path.abspath(config_path))
    keys = [(k, v) for k, v in cfg.items() if not isinstance(v, dict)] + [
        ("%s.%s" % (k, sub), v) for k, block in cfg.items() if isinstance(block, dict)
        for sub, v in block.items()]
    for key, value in sorted(keys):
        if not key.endswith("_file") or value in (None, ""):
            continue
        rel = value.lstrip("/") if isinstance(value, str) else ""
        parts = rel.split("/")
        if not rel or ".." in parts or rel in ("main.py", "config.json") or parts[0] == "lib":
            raise DeployError("%s must be a file name on the board such as \"ca.der\", "
                              "got %r" % (key, value))
        local = os.path.join(here, *parts)
        if not os.path.isfile(local):
            raise DeployError("%s names %s, which is not beside the config (%s)"
                              % (key, value, local))
        why = key.rpartition(".")[2] == "ca_file" and ca.problem(local)
        if why:
            raise DeployError("%s: %s" % (key, why))
        files[rel] = local
    return files


# -- the tree


def mpy_cross_version():
    out = subprocess.run(["mpy-cross", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"mpy v(\d+)\.(\d+)", out)
    if not m:
        raise DeployError("mpy-cross not found: run make deploy (it installs it)")
    return int(m.group(1)), int(m.group(2))


def sources(board):
    """[manifest.Entry]: what the board's image freezes (boards/<board>/manifest.py without
    the port's own modules, which every image has): the agent, its micropython-lib packages
    and the board's modules."""
    if board not in BOARDS:
        raise DeployError("unknown board %r (known: %s)" % (board, ", ".join(BOARDS)))
    return manifest.files(board_manifest(board), port=False)


def tree_paths(board, config, files):
    """Every path build_tree() writes, relative, with /."""
    paths = ["lib/" + os.path.splitext(e.target)[0] + ".mpy" for e in sources(board)]
    return paths + ["main.py"] + sorted(dict(files or {}, **({"config.json": config}
                                                              if config else {})))


def build_tree(out, board, config, march, files=None):
    """Write the exact tree that goes on the board into `out`; return its paths (with /)."""
    written = []
    lib = os.path.join(out, "lib")
    for entry in sources(board):
        error = manifest.compile_to(entry, lib, ["-march=" + march])
        if error:
            raise DeployError("mpy-cross " + error)
        written.append("lib/" + os.path.splitext(entry.target)[0] + ".mpy")
    with open(os.path.join(out, "main.py"), "wb") as f:
        f.write(MAIN)
    written.append("main.py")
    copies = dict(files or {})
    if config:
        copies["config.json"] = config
    for rel, local in sorted(copies.items()):
        dst = os.path.join(out, *rel.split("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(local, dst)
        written.append(rel)
    return written


def describe(written, config, files):
    mods = sum(1 for p in written if p.startswith("lib/"))
    parts = ["main.py", "lib/ (%d modules)" % mods]
    if config:
        parts.append("config.json <- %s" % config)
    parts += ["%s <- %s" % (rel, local) for rel, local in sorted(files.items())]
    return ", ".join(parts)


def write_dry_run(out, board, config, march, files, force):
    """The tree into `out`, which must be new, empty, or an earlier dry run's (or --force)."""
    marker = os.path.join(out, MARKER)
    previous = []
    if os.path.exists(out) and not os.path.isdir(out):
        raise DeployError("%s is a file, not a directory" % out)
    if os.path.isfile(marker):
        with open(marker) as f:
            previous = [line.strip() for line in f if line.strip()]
    elif os.path.isdir(out) and os.listdir(out) and not force:
        raise DeployError("%s is not empty and was not made by deploy: nothing written. Give "
                          "a new directory, or --force to write beside what is there "
                          "(nothing is deleted or overwritten)" % out)
    clash = [rel for rel in tree_paths(board, config, files) if rel not in previous
             and os.path.lexists(os.path.join(out, *rel.split("/")))]
    if clash:
        raise DeployError("%s already has %s, which deploy did not write: nothing written"
                          % (out, ", ".join(clash)))
    for rel in previous:  # what an earlier dry run wrote here, and only that
        path = os.path.join(out, *rel.split("/"))
        if ".." not in rel.split("/") and os.path.isfile(path):
            os.remove(path)
    written = build_tree(out, board, config, march, files)
    with open(marker, "w") as f:
        f.write("".join(p + "\n" for p in written))
    return written


# -- the board


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
        text = msg[-1] if msg else "exit status %d" % res.returncode
        if "in use" in text:
            text += ": is make repl, make logs or a serial monitor still attached?"
        raise DeployError("mpremote on %s failed: %s" % (port, text))
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
    """{path: sha256} of the board's files; directories as "path/": None."""
    out = mpremote(port, "exec", _HASHER)
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            found[parts[0]] = parts[1]
        elif len(parts) == 1 and parts[0].endswith("/"):
            found[parts[0]] = None
    return found


def deploy(port, tree, with_config):
    check_mpy_version(port)
    have = remote_hashes(port)
    if not with_config and "/config.json" not in have:
        raise DeployError("the board on %s has no config.json and no CONFIG was given: "
                          "make deploy PORT=%s CONFIG=your.json (template: %s)"
                          % (port, port, TEMPLATE))
    sent = unchanged = 0
    for dirpath, dirs, files in os.walk(tree):
        dirs.sort()
        rel_dir = os.path.relpath(dirpath, tree).replace(os.sep, "/")
        if rel_dir != "." and "/%s/" % rel_dir not in have:
            mpremote(port, "mkdir", ":" + rel_dir)
        for name in sorted(files):
            local = os.path.join(dirpath, name)
            remote = "/" + os.path.relpath(local, tree).replace(os.sep, "/")
            with open(local, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            if have.get(remote) == digest:
                unchanged += 1
                continue
            mpremote(port, "cp", local, ":" + remote)
            print("deploy: %s" % remote, flush=True)
            sent += 1
    print("deploy: %d file(s) sent, %d unchanged; resetting the board" % (sent, unchanged))
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
    p.add_argument("--force", action="store_true",
                   help="--dry-run into a directory deploy did not make (nothing there is "
                   "deleted or overwritten)")
    a = p.parse_args(argv)
    try:
        # Everything is checked before anything is written, here or on the board.
        files = {}
        if a.config:
            cfg = load_config(a.config, a.board)
            files = named_files(cfg, a.config)
            print("deploy: config %s: device %s%s%s" % (
                a.config, cfg["device_id"], links(cfg),
                ", TLS with %s" % cfg["ca_file"] if cfg.get("ca_file") else ""))
        if a.dry_run:
            written = write_dry_run(a.dry_run, a.board, a.config, a.march, files, a.force)
            print("deploy: tree written to %s: %s" % (a.dry_run, describe(written, a.config,
                                                                          files)))
            if not a.config:
                warn("no CONFIG given: the tree has no config.json (a board without one "
                     "holds the charger safe and prints CONFIG ERROR)")
            return 0
        if not a.port:
            raise DeployError("no PORT given: make deploy PORT=/dev/ttyUSB0 CONFIG=my.json")
        problem = port_problem(a.port)
        if problem:
            raise DeployError(problem)
        if not a.config:
            warn("no CONFIG given: the board keeps the config.json it has")
        with tempfile.TemporaryDirectory() as tmp:
            written = build_tree(tmp, a.board, a.config, a.march, files)
            print("deploy: to %s: %s" % (a.port, describe(written, a.config, files)),
                  flush=True)
            deploy(a.port, tmp, bool(a.config))
        return 0
    except DeployError as e:
        print("deploy: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
