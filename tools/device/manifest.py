"""The files a MicroPython manifest names, read by MicroPython's own manifest code, and
their compilation into a .mpy tree.

firmware/manifest.py is what an ESP32 image (boards/esp32/manifest.py) and make unix32
(boards/sim/manifest.py) freeze; the .mpy trees (make sim, make test, make deploy) are
built from the same manifest here, with tools/manifestfile.py of the pinned v1.28.0 source
in compile mode, require() resolved in the pinned micropython-lib, and each package's
version appended as __version__, as freezing does.
"""
import contextlib
import os
import subprocess
import sys
from collections import namedtuple

from tools.paths import MICROPYTHON_SRC, MPY_LIB, third_party

Entry = namedtuple("Entry", "source target opt metadata")


def _manifestfile():
    third_party()
    tools = os.path.join(MICROPYTHON_SRC, "tools")
    if tools not in sys.path:
        sys.path.append(tools)
    import manifestfile
    return manifestfile


def files(manifest, **options):
    """[Entry(source .py, target path on the board, mpy-cross -O level, package metadata)];
    each source a resolved path, as tools/paths.py gives them. `options` are the manifest's
    (e.g. port=False: boards/esp32/manifest.py without the port's own modules)."""
    mf = _manifestfile()
    m = mf.ManifestFile(mf.MODE_COMPILE, {"MPY_DIR": MICROPYTHON_SRC, "MPY_LIB_DIR": MPY_LIB,
                                          "PORT_DIR": None, "BOARD_DIR": None})
    m.include(manifest, **options)
    return [Entry(os.path.realpath(f.full_path), f.target_path, f.opt, f.metadata)
            for f in m.files()]


def compile_to(entry, out_dir, flags=()):
    """mpy-cross `entry` into out_dir/<target>.mpy; None, or the error as one line."""
    dst = os.path.join(out_dir, os.path.splitext(entry.target)[0] + ".mpy")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    flags = list(flags) + (["-O%d" % entry.opt] if entry.opt else [])
    tagged = (contextlib.nullcontext(entry.source) if entry.metadata is None
              else _manifestfile().tagged_py_file(entry.source, entry.metadata))
    # Written beside, then renamed over: a micropython that is loading the old file (a
    # bench, a parallel test worker) reads the old one or the new one, never half of one.
    tmp = "%s.%d.tmp" % (dst, os.getpid())
    with tagged as src:
        res = subprocess.run(["mpy-cross", *flags, "-o", tmp, "-s", entry.target, src],
                             capture_output=True, text=True)
    if res.returncode:
        if os.path.exists(tmp):
            os.remove(tmp)
        return "%s: %s" % (entry.source, res.stderr.strip())
    os.replace(tmp, dst)
    return None
