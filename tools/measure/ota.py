"""What an update costs on the charger (docs/ota.md, "Cost"): time and heap of one RSA-3072
manifest verification under each micropython build (tools/paths.py BUILDS: the 64-bit
wheel, the 32-bit v1.28.0 build with the agent frozen as on an ESP32 image), and the
smallest heap in which it passes; a whole update through the wired charger on the 32-bit
frozen build (its live heap, and the heaps it completes in); and what one update writes to
flash. make bench prints a row of each.

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
from tools.bench.update_server import UpdateServer
from tools.paths import MPY_DIR, ROOT, cpython_paths, micropython

cpython_paths()
import ota_bundle  # noqa: E402  the firmware's own install code (update_wear)
import ota_image  # noqa: E402
import ota_manifest  # noqa: E402

PROBE = os.path.join(ROOT, "tools", "measure", "probes", "ota_probe.py")
UPDATE_PROBE = os.path.join(ROOT, "tools", "measure", "probes", "update_probe.py")
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


def update_cost(heaps_kb=(32, 40, 48, 56)):
    """A whole update through the wired charger (probes/update_probe.py) on the 32-bit
    frozen build, the bundle make deploy installs served by make sim's download server:
    {heap KB: the probe's figures, or None where it failed}."""
    unix32.build(quiet=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = os.path.join(tmp, "app.tar")
        ota.make_bundle(bundle)
        release = os.path.join(tmp, "release.json")
        with open(release, "w") as f:
            json.dump(dict(ota.release(key, bundle, "9.0.0", "bundle"),
                           keys=[ota.public_text(key)]), f)
        server = UpdateServer(tmp, port=0)
        try:
            for kb in heaps_kb:
                state = os.path.join(tmp, "flash%d" % kb)
                os.mkdir(state)
                exe, env = micropython("unix32")
                r = subprocess.run(exe + ["-X", "heapsize=%dK" % kb, UPDATE_PROBE, state,
                                          server.url("app.tar"), release],
                                   env=env, capture_output=True, text=True, timeout=300)
                figures = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 \
                    and r.stdout.strip() else None
                out[kb] = figures if figures and figures["restarted"] else None
        finally:
            server.stop()
        out["bundle_bytes"] = os.path.getsize(bundle)
    return out


def update_wear(image_bytes=1536 * 1024):
    """What one update writes to flash, on the bench's flash models (tools/bench/
    flash_model.py) through the firmware's own install code: a bundle of make deploy's tree
    (bytes written to the file system, the record included) and an image of image_bytes
    (4 KB sectors erased in the other app partition)."""
    from tools.bench.flash_model import (CuttableFlash, EspFlash, MemoryMedium, make_image,
                                         partition_class)
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    keys = ota_manifest.keys([ota.public_text(key)])
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("bundle", "image"):
            path = os.path.join(tmp, kind)
            if kind == "bundle":
                ota.make_bundle(path)
            else:
                with open(path, "wb") as f:
                    f.write(make_image(b"\xa5" * (image_bytes - 64)))
            r = ota.release(key, path, "9.0.0", kind)
            m = ota_manifest.check(r["manifest"], r["signature"], keys, kind, "0.0.1")
            fs = CuttableFlash("/flash")
            if kind == "bundle":
                inst = ota_bundle.BundleInstall(m, "/flash", fs)
            else:
                app = (m.size // 4096 + 1) * 4096  # partitions of whole sectors
                esp = EspFlash(MemoryMedium(EspFlash.size_for(app), fs), app)
                esp.program(esp.parts["ota_0"][0], make_image(b"old"))  # esptool's
                esp.boot()
                esp.erases = 0
                inst = ota_image.ImageInstall(partition_class(esp), m, "/flash", fs)
            fs.spent = 0
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1024), b""):
                    inst.write(chunk)
            inst.finish()
            inst.activate("0.0.1")
            out[kind] = {"size": m.size, "fs_units": fs.spent}
            if kind == "image":
                out[kind]["sectors_erased"] = esp.erases
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


def update_row(cost):
    """make bench's row of a whole update on the 32-bit frozen build."""
    fits = [kb for kb in sorted(k for k in cost if isinstance(k, int)) if cost[kb]]
    if not fits:
        return ("OTA update, whole (32-bit frozen)", "failed at every heap tried",
                "an ESP32 heap starts at 56K")
    c = cost[fits[-1]]
    return ("OTA update, whole (32-bit frozen)",
            "live heap %.1f KB wired, %.1f KB with the request in (update_job, the manifest "
            "verified), %.1f KB after the switch; a %d KB bundle downloaded, verified and "
            "switched at %s" % (c["wired"] / 1024, c["requested"] / 1024,
                                c["switched"] / 1024, cost["bundle_bytes"] // 1024,
                                ", ".join("%dK" % kb for kb in fits)),
            "an ESP32 heap starts at 56K")


def wear_row(wear):
    b, i = wear["bundle"], wear["image"]
    return ("OTA update, flash wear",
            "bundle of %d KB: %d KB written to the file system (staging file, unpacked "
            "files, record); image of %d KB: %d sectors of 4 KB erased (the image's, once "
            "each, and one of otadata's)" % (b["size"] // 1024, b["fs_units"] // 1024,
                                              i["size"] // 1024, i["sectors_erased"]),
            "per update; NOR flash takes 100 000 erases per sector")


def main():
    cost = verify_cost()
    print(json.dumps(cost, indent=1))
    print(" | ".join(row(cost)))
    update = update_cost()
    print(json.dumps(update, indent=1))
    print(" | ".join(update_row(update)))
    wear = update_wear()
    print(json.dumps(wear, indent=1))
    print(" | ".join(wear_row(wear)))
    return 0 if all(cost.values()) and update.get(56) else 1


if __name__ == "__main__":
    sys.exit(main())
