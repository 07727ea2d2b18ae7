"""docs/http.md's walkthrough, run as written with curl against make sim's launcher: first
against the charger's own HTTP front, then, with only the address changed, against the cloud
beside it (docs/cloud.md), which serves the same paths and bodies: one curl works against
both. Every line must succeed (set -e: a grep that finds nothing fails), and the answers come
in the order the page gives."""
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

DOC = os.path.join(ROOT, "docs", "http.md")
TOKEN = "walkthrough-token-0123456789"  # the charger's token and, here, the cloud's key too


def commands():
    text = open(DOC).read().split("## Walkthrough", 1)[1]
    block = re.search(r"```\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def script(lines, broker_port, api_port, ids="act_walk_"):
    out = ["set -e"]
    for line in lines:
        line = line.replace("40123", str(broker_port)).replace("8081", str(api_port))
        out.append(line.replace("act_walk_", ids))
        out.append("sleep %g" % (3 if line.startswith("evctl") else 0.5))
    return "\n".join(out) + "\n"


def in_order(out, wanted):
    at = 0
    for w in wanted:
        found = out.find(w, at)
        assert found >= 0, "%s not found after position %d in:\n%s" % (w, at, out)
        at = found + len(w)


@pytest.fixture
def sim(broker, tmp_path, mpy_dir):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed here (apt-get install curl)")
    api_port, cloud_port = free_port(), free_port()
    proc = launch(broker, tmp_path / "flash", "--http-port", str(api_port), "--api-token",
                  TOKEN, "--cloud-port", str(cloud_port), "--api-key", TOKEN, "--no-page")
    lines = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                     daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        for port in (api_port, cloud_port):
            while not any(("sim: api http://127.0.0.1:%d/ev-charger/charger-1 (token %s)"
                           % (port, TOKEN)) in line or
                          line.startswith("sim: cloud http://127.0.0.1:%d" % port)
                          for line in lines):
                assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
                time.sleep(0.1)
        yield broker, api_port, cloud_port, lines
    finally:
        proc.send_signal(2)
        proc.wait(20)


def run(text):
    env = dict(os.environ)
    env.pop("EVSE_BROKER", None)
    return subprocess.run(["bash", "-c", text], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_http_walkthrough_runs_as_written_against_the_charger_and_the_cloud(sim):
    broker, api_port, cloud_port, launcher = sim
    lines = commands()
    assert sum(line.startswith("curl") for line in lines) >= 10
    r = run(script(lines, broker.port, api_port))
    assert r.returncode == 0, r.stdout + r.stderr + "".join(launcher)
    in_order(r.stdout, ['"status":"disconnected"', '"updated":["max_charge_rate"]',
                        '"powerRateLimit":3.68', '"state":"acknowledged"',
                        '"state":"acknowledged"', '"code":"CONFLICT"',
                        '"code":"STRATEGY_NOT_SUPPORTED"', '"state":"acknowledged"',
                        '"state":"cancelled"', '"state":"completed"', '"code":"UNAUTHORIZED"'])
    assert '"conflictingActionIds":["act_walk_2"]' in r.stdout  # beside its code, either side
    # The same lines against the cloud: only the address differs (and the action ids, new
    # ones: a repeated id is answered with the action as it stands).
    r = run(script(lines, broker.port, cloud_port, "act_cloud_"))
    assert r.returncode == 0, r.stdout + r.stderr + "".join(launcher)
    in_order(r.stdout, ['"status":"', '"updated":["max_charge_rate"]', '"powerRateLimit":3.68',
                        '"state":"acknowledged"', '"state":"acknowledged"', '"code":"CONFLICT"',
                        '"code":"STRATEGY_NOT_SUPPORTED"', '"state":"acknowledged"',
                        '"state":"cancelled"', '"state":"completed"', '"code":"UNAUTHORIZED"'])
    assert '"conflictingActionIds":["act_cloud_2"]' in r.stdout
