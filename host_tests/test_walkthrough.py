"""docs/protocol.md's walkthrough, run as written against make sim's launcher, on both
brokers make sim may start: every command succeeds and every request gets its reply."""
import os
import re
import shutil
import subprocess

import pytest

from e2e import BROKERS, launched
from tools.paths import ROOT

pytestmark = pytest.mark.brokers(*BROKERS)

DOC = os.path.join(ROOT, "docs", "protocol.md")
PAUSE_S = 1  # a person's pause between commands
AFTER_IDLE_S = 3  # and after an idle, which completes in about 1.5 s


def blocks():
    """The walkthrough's code blocks, as lists of commands (continuations joined)."""
    text = open(DOC).read().split("## Walkthrough", 1)[1]
    out = []
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        commands, pending = [], ""
        for line in block.splitlines():
            if line.endswith("\\"):
                pending += line[:-1]
                continue
            line, pending = pending + line, ""
            if line.strip() and not line.lstrip().startswith(("#", "$", "sim:", "  ")):
                commands.append(line)
        out.append(commands)
    return [b for b in out if b]


def script(commands, port):
    lines = ["set -e"]
    for command in commands:
        lines.append(command.replace("40123", str(port)))
        if not command.endswith("&") and not command.startswith("export"):
            lines.append("sleep %d" % (AFTER_IDLE_S if "idle" in command else PAUSE_S))
    return "\n".join(lines) + "\n"


@pytest.fixture
def sim(broker, tmp_path, mpy_dir):
    with launched(broker, tmp_path / "flash") as c:
        yield broker, c


def run(text, tmp_path):
    env = dict(os.environ, PATH=os.path.join(ROOT, ".venv", "bin") + ":" + os.environ["PATH"])
    env.pop("EVSE_BROKER", None)
    return subprocess.run(["bash", "-c", text], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_evctl_walkthrough_runs_as_written(sim, tmp_path):
    broker, c = sim
    evctl = [b for b in blocks() if any(line.startswith("evctl ") for line in b)]
    assert len(evctl) == 1
    r = run(script(evctl[0], broker.port), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "charger-1 on 127.0.0.1:%d: online" % broker.port in r.stdout  # status
    assert '"offeredCurrent": 16.0' in r.stdout and '"limitedBy": "max_charge_rate"' in r.stdout
    assert "idle: acknowledged" in r.stdout and "charge: acknowledged" in r.stdout
    assert re.search(r"\d\d:\d\d:\d\d charging .* cap 3.68 kW", r.stdout)  # watch's lines


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None,
                    reason="mosquitto-clients is not installed here")
def test_the_mosquitto_walkthrough_loses_no_request(sim, tmp_path):
    broker, c = sim
    mosq = [b for b in blocks() if any(line.startswith("mosquitto_") for line in b)]
    assert len(mosq) == 2
    for commands in mosq:
        assert all("-q 1" in line for line in commands if line.startswith("mosquitto_pub"))
        r = run(script(commands, broker.port), tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
    wanted = ["f-1", "l-1", "l-2", "r-1", "r-2", "r-3", "r-4"]
    try:
        c.wait(lambda: all(rid in c.replies for rid in wanted), 10)
    except TimeoutError:
        missing = [rid for rid in wanted if rid not in c.replies]
        log = open(os.path.join(broker.dir, "broker.log"), errors="replace").read()[-3000:]
        pytest.fail("no reply to %s; the broker's log ends:\n%s" % (missing, log))
    statuses = {rid: c.replies[rid][0]["meta"]["status"] for rid in wanted}
    assert statuses == {"f-1": 200, "l-1": 200, "l-2": 200, "r-1": 200, "r-2": 200,
                        "r-3": 202, "r-4": 202}, statuses
