"""make bench: the OCPP uplink's heap (docs/ocpp.md, "Memory"): the agent with OCPP under the
wheel's micropython and on make unix32's 32-bit frozen build (probes/ocpp_probe.py) through
a session that the test central system (tools/bench/csms.py) drives; row() and row_32() are
make bench's table rows.
"""
import json
import os
import subprocess

from tools.device import unix32
from tools.paths import ROOT, micropython

HEAPS_32_K = (40, 44, 48, 52, 56)  # the 32-bit search, up to an ESP32's first heap


def measure(state_dir, seconds=25, build="wheel", heapsize="256K"):
    """The OCPP uplink's heap (probes/ocpp_probe.py) through a session a central system
    drives: a daily profile of 24 periods, a ChargePointMaxProfile, every configuration
    key, a day's composite schedule, meter values every second."""
    from ocpp.v16 import call
    from tools.bench.csms import Csms
    csms = Csms(interval=10).start()
    proc = None
    try:
        exe, env = micropython(build)
        proc = subprocess.Popen(
            exe + ["-X", "heapsize=" + heapsize,
                   os.path.join(ROOT, "tools", "measure", "probes", "ocpp_probe.py"), csms.url,
                   state_dir, str(seconds)], env=env, stdout=subprocess.PIPE, text=True)
        csms.wait(lambda: csms.cp and csms.actions("BootNotification"), 30)
        csms.call(call.ChangeConfiguration(key="MeterValueSampleInterval", value="1"))
        day = {"chargingRateUnit": "A", "startSchedule": "2026-11-24T00:00:00Z",
               "chargingSchedulePeriod": [{"startPeriod": h * 3600, "limit": 6 + h}
                                          for h in range(24)]}
        for connector, purpose, pid, schedule in (
                (1, "TxDefaultProfile", 1, day),
                (0, "ChargePointMaxProfile", 2, {"chargingRateUnit": "W",
                                                 "chargingSchedulePeriod": [
                                                     {"startPeriod": 0, "limit": 7400}]})):
            profile = {"chargingProfileId": pid, "stackLevel": 0,
                       "chargingProfilePurpose": purpose, "chargingProfileKind": "Absolute",
                       "chargingSchedule": schedule}
            if pid == 1:
                profile.update(chargingProfileKind="Recurring", recurrencyKind="Daily")
            csms.call(call.SetChargingProfile(connector_id=connector,
                                              cs_charging_profiles=profile))
        csms.wait(lambda: csms.actions("StartTransaction"), 20)
        csms.call(call.GetConfiguration())
        csms.call(call.GetCompositeSchedule(connector_id=1, duration=86400))
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        if proc and proc.poll() is None:  # a session that failed: no probe left behind
            proc.kill()
            proc.wait()
        csms.close()
    return json.loads(out.strip().splitlines()[-1])


def measure_32(state_dir):
    """The OCPP uplink on make unix32 (32-bit, frozen, hashlib.sha1 from mbedTLS as on the
    ESP32 image; ws://, no TLS): measure() at 56K, and the smallest of HEAPS_32_K a session
    passes in (one connection, the transaction accepted); or {"skipped": why}."""
    try:
        unix32.build()
    except (unix32.Unavailable, unix32.BuildError) as e:
        return {"skipped": str(e)}
    if not unix32.has_sha1():
        return {"skipped": unix32.NEED_MBEDTLS}
    sessions = {}

    def passes(k):
        os.makedirs(os.path.join(state_dir, "%dK" % k))
        try:
            got = measure(os.path.join(state_dir, "%dK" % k), build="unix32",
                          heapsize="%dK" % k)
        except Exception as e:  # out of heap: a call unanswered, no figures printed
            sessions[k] = "failed: %r" % e
            return None
        ok = got["connects"] == 1 and got["accepted"]
        sessions[k] = "passed" if ok else "failed: %s" % got
        return got if ok else None

    at_56k = passes(56)
    lo, hi = 0, len(HEAPS_32_K) - 1  # HEAPS_32_K[hi] passes (or nothing does)
    while at_56k and lo < hi:
        mid = (lo + hi) // 2
        if passes(HEAPS_32_K[mid]):
            hi = mid
        else:
            lo = mid + 1
    return {"at_56k": at_56k, "smallest_heap_k": HEAPS_32_K[hi] if at_56k else None,
            "sessions": sessions}


def row(ocpp):
    return ("heap: OCPP uplink (64-bit wheel, .mpy in heap)",
            "+%.1f KB imported and built; agent with OCPP %.1f KB live, %.1f KB peak in a session"
            % (ocpp["ocpp_built"] / 1024, ocpp["peak_live"] / 1024, ocpp["peak_alloc"] / 1024),
            "the agent alone %.1f KB; an ESP32 heap starts at 56 KB (docs/ocpp.md: memory)"
            % (ocpp["agent"] / 1024))


def row_32(o):
    what = "heap: OCPP uplink (32-bit, frozen, ws://)"
    if "skipped" in o:
        return what, "not measured", o["skipped"]
    if not o["at_56k"]:
        return what, "FAILED at 56K: %s" % o["sessions"][56], "an ESP32 heap starts at 56 KB"
    m = o["at_56k"]
    return (what, "+%.1f KB imported and built; agent with OCPP %.1f KB live, %.1f KB peak in a "
            "session at 56K; smallest heap passing %dK" % (
                m["ocpp_built"] / 1024, m["peak_live"] / 1024, m["peak_alloc"] / 1024,
                o["smallest_heap_k"]),
            "the agent alone %.1f KB; an ESP32 heap starts at 56 KB (docs/ocpp.md: memory)"
            % (m["agent"] / 1024))
