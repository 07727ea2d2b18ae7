"""make bench: the OCPP uplink's heap (docs/ocpp.md, "Memory"): the agent with OCPP under the
wheel's micropython (probes/ocpp_probe.py) through a session that the test central system
(tools/bench/csms.py) drives; row() is make bench's table row.
"""
import json
import os
import subprocess

from tools.paths import ROOT, micropython


def measure(state_dir, seconds=25):
    """The OCPP uplink's heap (probes/ocpp_probe.py) through a session a central system
    drives: a daily profile of 24 periods, a ChargePointMaxProfile, every configuration
    key, a day's composite schedule, meter values every second."""
    from ocpp.v16 import call
    from tools.bench.csms import Csms
    csms = Csms(interval=10).start()
    try:
        exe, env = micropython("wheel")
        proc = subprocess.Popen(
            exe + ["-X", "heapsize=256K",
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
        csms.close()
    return json.loads(out.strip().splitlines()[-1])


def row(ocpp):
    return ("heap: OCPP uplink (64-bit wheel, .mpy in heap)",
            "+%.1f KB imported and built; agent with OCPP %.1f KB live, %.1f KB peak in a session"
            % (ocpp["ocpp_built"] / 1024, ocpp["peak_live"] / 1024, ocpp["peak_alloc"] / 1024),
            "the agent alone %.1f KB; an ESP32 heap starts at 56 KB (docs/ocpp.md: memory)"
            % (ocpp["agent"] / 1024))
