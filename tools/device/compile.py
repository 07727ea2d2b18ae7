"""Compile the agent, its libraries and every board module with mpy-cross into one tree.

The agent and the micropython-lib packages it uses come from firmware/manifest.py (the
same files an ESP32 image freezes), the boards from boards/*/ ; packages keep their
folders (umqtt/simple.mpy). A CPython-only construct fails here, as it would on a board.
Usage: python -m tools.device.compile OUT_DIR [--march ARCH]
"""
import glob
import os
import subprocess
import sys

from tools.device import manifest
from tools.paths import AGENT_MANIFEST, BOARDS, ROOT


def board_sources():
    return sorted(p for p in glob.glob(os.path.join(BOARDS, "*", "*.py"))
                  if os.path.basename(p) != "manifest.py")


def sources():
    """[(source .py, target path, -O level)]: the agent's manifest, then every board."""
    return manifest.files(AGENT_MANIFEST) + [(p, os.path.basename(p), None)
                                             for p in board_sources()]


def compile_all(out_dir, extra=()):
    failures = []
    for src, target, opt in sources():
        dst = os.path.join(out_dir, os.path.splitext(target)[0] + ".mpy")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        flags = list(extra) + (["-O%d" % opt] if opt else [])
        res = subprocess.run(["mpy-cross", *flags, "-o", dst, "-s", target, src],
                             capture_output=True, text=True)
        if res.returncode:
            failures.append("%s: %s" % (os.path.relpath(src, ROOT), res.stderr.strip()))
    return failures


if __name__ == "__main__":
    args = sys.argv[1:]
    extra = ["-march=" + args[args.index("--march") + 1]] if "--march" in args else []
    bad = compile_all(args[0], extra)
    for line in bad:
        print(line, file=sys.stderr)
    print("compiled %d modules into %s" % (len(sources()) - len(bad), args[0]))
    sys.exit(1 if bad else 0)
