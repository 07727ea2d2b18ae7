"""The steady-state control tick allocates nothing, under the real interpreter."""
import json
import os
import subprocess

from tools.paths import ROOT, micropython


def test_control_tick_allocates_nothing_under_micropython(mp_build):
    exe, env = micropython(mp_build[0])
    out = subprocess.run(exe + ["-X", "heapsize=" + (mp_build[1] or "256K"),
                                os.path.join(ROOT, "tools", "measure", "probes", "alloc_probe.py"),
                                "-", "3000"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    results = {r["state"]: r for r in json.loads(out.stdout)}
    # The probe can see an allocation: one float per tick is caught.
    assert results.pop("calibration")["bytes"] >= 500 * 16
    assert results["charging"]["contactor"] and results["charging"]["status"] == 2
    # The switch from three phases to one happened within the measured ticks, and the
    # session charges again on one phase.
    assert results["phase_switch"]["phase_switches"] == 2, results["phase_switch"]
    assert results["phase_switch"]["contactor"] and results["phase_switch"]["status"] == 2
    for name, r in results.items():
        assert r["bytes"] == 0, (name, r)
