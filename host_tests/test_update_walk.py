"""docs/ota.md's walk, run as written: a release key, a release of make sim's charger signed
with it, make sim trusting the key and serving the releases, evctl update installing it to
valid, then a version that fails at import, rolled back, as the user sees it. The only
changes: HOME is a temporary folder (the walk keeps its files in ~/ota), make sim gets a
state directory of its own and no page, and the ports are the ones make sim printed."""
import os
import re
import shlex
import subprocess
import sys
import threading

from e2e import online
from tools.bench import children
from tools.client import Charger
from tools.bench.poll import wait_for
from tools.paths import ROOT

DOC = os.path.join(ROOT, "docs", "ota.md")


def blocks():
    """The walk's command blocks (fenced without a language; the output blocks are text)."""
    text = open(DOC).read().split("## The walk", 1)[1].split("\n## ", 1)[0]
    return [[line for line in b.splitlines() if line.strip()]
            for lang, b in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M) if not lang]


def run(commands, env):
    """The commands in one shell, as typed: each one's output, then '== exit N'."""
    script = "".join('%s\necho "== exit $?"\n' % c for c in commands)
    r = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=400)
    return r.stdout + r.stderr, [int(n) for n in re.findall(r"^== exit (\d+)$", r.stdout, re.M)]


def test_the_walk_runs_as_written_from_a_key_to_a_rollback(tmp_path, mpy_dir):
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home),
               PATH=os.path.join(ROOT, ".venv", "bin") + ":" + os.environ["PATH"])
    env.pop("EVSE_BROKER", None)
    release, sim, update, broken = blocks()

    out, exits = run(release, env)
    assert exits == [0] * len(release), out
    assert sorted(os.listdir(home / "ota")) == ["release.pem", "sim-0.3.0.tar",
                                                "sim-0.3.0.tar.ota.json"]

    (line,) = sim
    args = [a.replace("~", str(home)) for a in
            shlex.split(re.fullmatch(r'make sim ARGS="(.*)"', line).group(1))]
    proc = subprocess.Popen([sys.executable, "-m", "tools.bench.sim", "--state-dir",
                             str(tmp_path / "flash"), "--no-page", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children.adopt(proc, lambda: children.interrupt(proc))
    said = []
    reader = threading.Thread(target=lambda: said.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("export EVSE_BROKER=" in s for s in said)
                 and any("updates served from" in s for s in said), 30)
        broker = re.search(r"export EVSE_BROKER=(\S+)", "".join(said)).group(1)
        port = re.search(r"updates served from \S+ at http://127.0.0.1:(\d+)/",
                         "".join(said)).group(1)
        c = Charger(broker, "charger-1")
        try:
            online(c)
        finally:
            c.close()
        typed = [cmd.replace("127.0.0.1:40123", broker).replace(":8378/", ":%s/" % port)
                 for cmd in update + broken]
        out, exits = run(typed, env)
    finally:
        proc.send_signal(2)
        proc.wait(20)
        reader.join(5)
        children.release(proc)
    log = "".join(said)
    assert proc.returncode == 0 and "sim: stopped" in log, log

    # The good release: installed, restarted, on trial, valid.
    assert exits[:len(update)] == [0] * len(update), out
    assert "update: 0.3.0 accepted (downloading)" in out
    for line in ("update.downloading", "update.verified", "charger-1 is offline",
                 "charger-1 is online", "update.installed", "update: 0.3.0 is valid",
                 "firmware      0.3.0 (updated from 0.2.0)"):
        assert line in out, (line, out)
    # The broken one: refused to run three times, rolled back, and said so; evctl exits 1.
    assert exits[len(update):] == [0] * (len(broken) - 2) + [1, 0], out
    assert "update: 0.4.0 accepted (downloading)" in out
    # Decided at boot: its event may come before the board knows the time (docs/ota.md).
    assert re.search(r"(\d\d:\d\d:\d\d|--:--:--) update.rolled_back crashed", out), out
    assert "firmware      0.3.0 (the update to 0.4.0 was rolled back: crashed)" in out
    assert log.count("ImportError: 0.4.0 fails at import") == 3, log
    assert "sim: agent reset at boot 3 time(s)" in log, log
