"""The MQTT client layer byte for byte against a fake socket (mqtt_client_cases.py), under
CPython and as a script under each micropython build, with the pinned umqtt.simple 1.7.0."""
import os
import subprocess
import sys

import pytest

from tools.paths import MPY_LIB, micropython

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(MPY_LIB, "micropython", "umqtt.simple"))

import mqtt_client_cases as cases  # noqa: E402


@pytest.mark.parametrize("name,case", cases.CASES, ids=[n[5:] for n, _ in cases.CASES])
def test_cpython(name, case):
    case()


# Under micropython the cases run as one script, which prints "ok NAME" for each that passed
# and stops at the first that fails.
EVERY_CASE_OK = [w for name, _ in cases.CASES for w in ("ok", name)]


def run_cases(build):
    exe, env = micropython(build, extra_dirs=[HERE])
    return subprocess.run(exe + [os.path.join(HERE, "mqtt_client_cases.py")],
                          env=env, capture_output=True, text=True, timeout=60)


def test_micropython_wheel(mpy_dir):
    out = run_cases(mpy_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == EVERY_CASE_OK


def test_micropython_unix32_frozen(unix32):
    out = run_cases(unix32)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == EVERY_CASE_OK
