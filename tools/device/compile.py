"""Compile the agent, its libraries and every board module with mpy-cross into one tree.

The agent and the micropython-lib packages it uses come from firmware/manifest.py (the
same files an ESP32 image freezes), the boards from boards/*/ ; packages keep their
folders (umqtt/simple.mpy). A CPython-only construct fails here, as it would on a board.
Usage: python -m tools.device.compile OUT_DIR [--march ARCH]
"""
import glob
import os
import sys

from tools.device import manifest
from tools.device.lock import build_lock
from tools.paths import AGENT_MANIFEST, BOARDS


def board_sources():
    return sorted(p for p in glob.glob(os.path.join(BOARDS, "*", "*.py"))
                  if os.path.basename(p) != "manifest.py")


def sources():
    """[manifest.Entry]: the agent's manifest, then every board module."""
    return manifest.files(AGENT_MANIFEST) + [manifest.Entry(p, os.path.basename(p), None, None)
                                             for p in board_sources()]


def compile_all(out_dir, extra=()):
    with build_lock():
        return [e for e in (manifest.compile_to(s, out_dir, extra) for s in sources()) if e]


if __name__ == "__main__":
    args = sys.argv[1:]
    extra = ["-march=" + args[args.index("--march") + 1]] if "--march" in args else []
    bad = compile_all(args[0], extra)
    for line in bad:
        print(line, file=sys.stderr)
    print("compiled %d modules into %s" % (len(sources()) - len(bad), args[0]))
    sys.exit(1 if bad else 0)
