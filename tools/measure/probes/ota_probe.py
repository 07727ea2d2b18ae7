# What verifying an update's signed manifest costs under micropython (docs/ota.md,
# "Cost"): the heap the OTA trust modules take once imported, the bytes one verification
# allocates (the collector held off, so nothing is freed in between: its peak at most), and
# its time, median of RUNS, with its longest single C call beside it (one of the 17 modular
# squarings and multiplications: on the ESP32, a GIL port, what holds the control thread
# at most). RELEASE is a JSON
# file: {"keys": [...], "manifest": ..., "signature": ...} (tools/measure/ota.py makes it).
#   micropython -X heapsize=56K ota_probe.py RELEASE [RUNS]
import gc
import json
import sys
import time

with open(sys.argv[1]) as f:
    r = json.load(f)
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
gc.collect()
base = gc.mem_alloc()
import ota_manifest
import ota_rsa  # noqa: F401 (its cost is measured: ota_manifest imports it)
gc.collect()
out = {"imported": gc.mem_alloc() - base}
keys = ota_manifest.keys(r["keys"])
gc.collect()
out["keys"] = gc.mem_alloc() - base - out["imported"]
gc.disable()
before = gc.mem_alloc()
ota_manifest.check(r["manifest"], r["signature"], keys, "bundle", "0.0.1")
out["verify_alloc"] = gc.mem_alloc() - before
gc.enable()
times = []
pows = []
key = list(keys.values())[0]
s = int.from_bytes(ota_manifest.a2b_base64(r["signature"]), "big")
for _ in range(runs):
    gc.collect()
    t = time.ticks_us()
    ota_manifest.check(r["manifest"], r["signature"], keys, "bundle", "0.0.1")
    times.append(time.ticks_diff(time.ticks_us(), t))
    t = time.ticks_us()
    pow(s, 2, key.n)
    pows.append(time.ticks_diff(time.ticks_us(), t))
times.sort()
pows.sort()
out["verify_us"] = times[len(times) // 2]
out["step_us"] = pows[len(pows) // 2]
print(json.dumps(out))
