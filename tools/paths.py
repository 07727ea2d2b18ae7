"""Where things are, for every tool and test: one definition of the project's paths.

Every path here is resolved (no symlink in it), as the manifest reader's are
(tools/device/manifest.py): a path from one side compares equal to the same file from the
other even when ../shared, or the checkout itself, is reached through a symlink.
"""
import os
import sys

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # as it was reached
ROOT = os.path.realpath(_HERE)
FIRMWARE = os.path.join(ROOT, "firmware")
# The firmware's folders, one per layer (docs/design.md): each has a manifest.py, which
# firmware/manifest.py includes. Frozen flat (a module's name is global, no package), so
# each folder is a directory on the path wherever the sources run (cpython_paths, the
# micropython tests) and the .mpy tree (MPY_DIR) is one flat folder. firmware/ itself is
# not: its folders would be importable as packages there.
FIRMWARE_DIRS = sorted(os.path.join(FIRMWARE, d) for d in os.listdir(FIRMWARE)
                       if os.path.isfile(os.path.join(FIRMWARE, d, "manifest.py")))
BOARDS = os.path.join(ROOT, "boards")
BUILD = os.path.join(ROOT, "build")
MPY_DIR = os.path.join(BUILD, "mpy")  # firmware, boards and their libraries compiled by mpy-cross
SHIMS = os.path.join(ROOT, "tools", "bench", "shims")

# The agent and the micropython-lib packages it uses (also what an ESP32 image freezes).
AGENT_MANIFEST = os.path.join(FIRMWARE, "manifest.py")

# Pinned third-party code beside the project (../shared/third_party/README.md): the
# micropython-lib that MicroPython v1.28.0 freezes, and the v1.28.0 source.
THIRD_PARTY = os.path.realpath(os.path.join(os.path.dirname(_HERE), "shared", "third_party"))
MPY_LIB = os.path.join(THIRD_PARTY, "micropython-lib")
MICROPYTHON_SRC = os.path.join(THIRD_PARTY, "micropython-1.28.0")

# make unix32: the v1.28.0 unix port, 32-bit, with boards/sim/manifest.py frozen in.
UNIX32_DIR = os.path.join(BUILD, "unix32")
UNIX32 = os.path.join(UNIX32_DIR, "micropython")
SIM_MANIFEST = os.path.join(BOARDS, "sim", "manifest.py")
# The same build with what an ESP32 image freezes of the project (boards/esp32/manifest.py).
UNIX32_ESP32 = os.path.join(UNIX32_DIR, "micropython-esp32")


def third_party():
    """THIRD_PARTY, or SystemExit with one line saying what is missing."""
    for path in (MPY_LIB, MICROPYTHON_SRC):
        if not os.path.isdir(path):
            raise SystemExit("error: %s not found: the project needs ../shared/third_party "
                             "beside it (pinned micropython-lib and MicroPython v1.28.0)" % path)
    return THIRD_PARTY


# The agent under MicroPython, three ways (docs/performance.md):
#   wheel       the pip wheel's micropython (64-bit), the agent as .mpy in the heap
#   unix32      make unix32's build (32-bit, as an ESP32), the agent frozen into it
#   unix32-mpy  the same binary, the agent as .mpy in the heap (MPY_DIR shadows the frozen)
# MICROPYPATH replaces the default path: ".frozen" stays on it, after our directories, so
# the pinned micropython-lib wins over the copies the wheel freezes (requests, ssl).
BUILDS = ("wheel", "unix32", "unix32-mpy")


def micropython(build="wheel", extra_dirs=()):
    """[executable], environment: how to run a script or module of the agent under `build`."""
    if build not in BUILDS:
        raise ValueError("unknown build %r (known: %s)" % (build, ", ".join(BUILDS)))
    exe = "micropython" if build == "wheel" else UNIX32
    dirs = list(extra_dirs) + ([] if build == "unix32" else [MPY_DIR])
    return [exe], dict(os.environ, MICROPYPATH=":".join(dirs + [".frozen"]))


def board_dir(name):
    return os.path.join(BOARDS, name)


def board_manifest(name):
    """A board's manifest: what its image freezes and make deploy puts in lib/."""
    return os.path.join(BOARDS, name, "manifest.py")


def firmware_sources():
    """{module name: its source} for every module of the firmware's folders."""
    return {name[:-3]: os.path.join(d, name) for d in FIRMWARE_DIRS
            for name in sorted(os.listdir(d)) if name.endswith(".py") and name != "manifest.py"}


def cpython_paths():
    """Make the firmware importable in this CPython process (the in-process rig, unit tests)."""
    for p in [SHIMS] + FIRMWARE_DIRS + [board_dir("sim")]:
        if p not in sys.path:
            sys.path.insert(0, p)
