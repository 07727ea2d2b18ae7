"""Where things are, for every tool and test: one definition of the project's paths."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
BOARDS = os.path.join(ROOT, "boards")
BUILD = os.path.join(ROOT, "build")
MPY_DIR = os.path.join(BUILD, "mpy")  # firmware + boards compiled by mpy-cross (make sim runs these)
SHIMS = os.path.join(ROOT, "tools", "bench", "shims")


def board_dir(name):
    return os.path.join(BOARDS, name)


def cpython_paths():
    """Make the firmware importable in this CPython process (the in-process rig, unit tests)."""
    for p in (SHIMS, FIRMWARE, board_dir("sim")):
        if p not in sys.path:
            sys.path.insert(0, p)
