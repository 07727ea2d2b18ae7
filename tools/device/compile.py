"""Compile every firmware and board module with mpy-cross into one directory.

A CPython-only construct fails here, as it would when deploying to a board.
Usage: python tools/compile.py OUT_DIR [--march ARCH]
"""
import glob
import os
import subprocess
import sys

from tools.paths import BOARDS, BUILD, FIRMWARE, ROOT



def sources():
    return sorted(glob.glob(os.path.join(FIRMWARE, "*.py")) +
                  glob.glob(os.path.join(BOARDS, "*", "*.py")))


UMQTT = os.path.join(BUILD, "lib", "umqtt", "simple.py")


def compile_all(out_dir, extra=()):
    """Compile ours, and umqtt.simple when fetched (frozen on the ESP32, so not RAM there)."""
    os.makedirs(out_dir, exist_ok=True)
    jobs = [(src, os.path.join(out_dir, os.path.splitext(os.path.basename(src))[0] + ".mpy"))
            for src in sources()]
    if os.path.exists(UMQTT):
        os.makedirs(os.path.join(out_dir, "umqtt"), exist_ok=True)
        open(os.path.join(out_dir, "umqtt", "__init__.py"), "w").close()
        jobs.append((UMQTT, os.path.join(out_dir, "umqtt", "simple.mpy")))
    failures = []
    for src, dst in jobs:
        res = subprocess.run(["mpy-cross", *extra, "-o", dst, src], capture_output=True,
                             text=True)
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
