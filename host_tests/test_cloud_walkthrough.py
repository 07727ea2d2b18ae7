"""docs/cloud.md's walkthrough, run as written against make sim's launcher with its cloud
(`--cloud-port N --api-key K`): the agent under micropython on Mosquitto (or amqtt), the
service beside it. Every line must succeed (set -e: a grep that finds nothing fails), and
the answers come in the order the page gives: a read goes live, then cache, then fallback
when the charger's power is cut, and cache again when it is back."""
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from e2e import launch
from tools.bench.broker import free_port
from tools.paths import ROOT

DOC = os.path.join(ROOT, "docs", "cloud.md")
KEY = "walkthrough-key-0123456789"


def commands():
    text = open(DOC).read().split("## Walkthrough", 1)[1]
    block = re.search(r"```\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def pause_s(line):
    # A person's pause; after evctl, time for a car to start or a power cut to be noticed.
    return 3 if line.startswith("evctl") else 0.5


def script(lines, broker_port, cloud_port):
    out = ["set -e"]
    for line in lines:
        out.append(line.replace("40123", str(broker_port)).replace("8080", str(cloud_port)))
        out.append("sleep %g" % pause_s(line))
    return "\n".join(out) + "\n"


@pytest.fixture
def sim(broker, tmp_path, mpy_dir):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed here (apt-get install curl)")
    b = broker
    port = free_port()
    proc = launch(b, tmp_path / "flash", "--cloud-port", str(port), "--api-key", KEY,
                  "--no-page")
    lines = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                     daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("sim: cloud http://127.0.0.1:%d" % port)
                      for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        yield b, port, lines
    finally:
        proc.send_signal(2)
        proc.wait(20)


def test_the_cloud_walkthrough_runs_as_written(sim):
    broker, port, launcher = sim
    lines = commands()
    assert any("power off" in line for line in lines)
    env = dict(os.environ)
    env.pop("EVSE_BROKER", None)
    r = subprocess.run(["bash", "-c", script(lines, broker.port, port)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr + "".join(launcher)
    out = r.stdout
    assert '"id":"charger-1"' in out
    wanted = ['"source":"live"', '"source":"cache"', '"powerRateLimit":3.68',
              '"state":"acknowledged"', '"code":"CONFLICT"', '"state":"acknowledged"',
              '"state":"cancelled"', '"secret":"whsec_',
              '"source":"fallback"', '"sync":{"available":false,"lastPulledAt":"20',
              '"code":"DEVICE_OFFLINE"', '"state":"cancelled"', '"code":"UNAUTHORIZED"',
              '"source":"cache"', '"available":true']
    at = 0
    for w in wanted:  # in this order
        found = out.find(w, at)
        assert found >= 0, "%s not found after position %d in:\n%s" % (w, at, out)
        at = found + len(w)
