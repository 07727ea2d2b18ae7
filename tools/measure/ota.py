"""What verifying an update costs on the charger (docs/ota.md, "Cost"): time and heap of
one RSA-3072 manifest verification under each micropython build (tools/paths.py BUILDS:
the 64-bit wheel, the 32-bit v1.28.0 build with the agent frozen as on an ESP32 image),
and the smallest heap in which it passes. make bench prints a row of it.

  python -m tools.measure.ota
"""
import json
import os
import subprocess
import sys
import tempfile

from cryptography.hazmat.primitives.asymmetric import rsa

from tools import ota
from tools.device import unix32
from tools.device.compile import compile_all
from tools.paths import MPY_DIR, ROOT, micropython

PROBE = os.path.join(ROOT, "tools", "measure", "probes", "ota_probe.py")
BUILDS = ("wheel", "unix32")
HEAPS_KB = range(4, 65, 2)


def _probe(build, release, heap, runs):
    exe, env = micropython(build)
    out = subprocess.run(exe + ["-X", "heapsize=%dK" % heap, PROBE, release, str(runs)],
                         env=env, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None


def verify_cost(bits=3072):
    """{build: the probe's figures and "smallest_heap_kb"}; None where it failed, or for
    unix32 where it cannot be built here."""
    builds = BUILDS
    if compile_all(MPY_DIR):  # the wheel loads the firmware as .mpy from here
        builds = ("unix32",)
    try:
        unix32.build(quiet=True)
    except (unix32.Unavailable, unix32.BuildError):
        builds = tuple(b for b in builds if b != "unix32")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    with tempfile.TemporaryDirectory() as tmp:
        payload = os.path.join(tmp, "payload.tar")
        with open(payload, "wb") as f:
            f.write(b"\0" * 10240)  # what is signed does not change the cost
        release = os.path.join(tmp, "release.json")
        with open(release, "w") as f:
            json.dump(dict(ota.release(key, payload, "0.3.0", "bundle"),
                           keys=[ota.public_text(key)]), f)
        out = dict.fromkeys(BUILDS)
        for build in builds:
            figures = _probe(build, release, 256, 20)
            if figures is not None:
                figures["smallest_heap_kb"] = next(
                    (kb for kb in HEAPS_KB if _probe(build, release, kb, 1)), None)
            out[build] = figures
    return out


def row(cost):
    """make bench's row: (figure, measured, compare against)."""
    parts = []
    for build, what in (("unix32", "32-bit frozen"), ("wheel", "64-bit wheel")):
        c = cost.get(build)
        parts.append("%s: not measured" % what if c is None else
                     "%s %.1f ms (longest C call %.2f ms), %.1f KB allocated, passes at %sK"
                     % (what, c["verify_us"] / 1000, c["step_us"] / 1000,
                        c["verify_alloc"] / 1024, c["smallest_heap_kb"]))
    return ("OTA manifest verify (RSA-3072, PKCS#1 v1.5)", "; ".join(parts),
            "this machine; not measured on an ESP32 (docs/ota.md, Cost); an ESP32 heap "
            "starts at 56K")


def main():
    cost = verify_cost()
    print(json.dumps(cost, indent=1))
    print(" | ".join(row(cost)))
    return 0 if all(cost.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
