"""Nothing is left running or lying around: make sim stops cleanly on Ctrl-C and when its
terminal closes, the agent ends with its bench, and what tests start is stopped even when
the run is interrupted."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

from e2e import Charger, launch
from tools.bench.broker import free_port
from tools.paths import ROOT


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def gone(pid, seconds=15):
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def read_until(proc, text, seconds=60):
    out = ""
    deadline = time.monotonic() + seconds
    while text not in out:
        line = proc.stdout.readline()
        assert line and time.monotonic() < deadline, out
        out += line
    return out


def test_sighup_stops_make_sim_cleanly_and_leaves_nothing(tmp_path, mpy_dir):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # A page port of its own: the default (8377) may be another worker's make sim's a moment
    # after this one lets it go, and the test asks that this one's is closed.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.bench.sim", "--state-dir", str(tmp_path / "flash"),
         "--page-port", str(free_port())],
        cwd=ROOT, env=dict(os.environ, TMPDIR=str(tmp)), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    out = read_until(proc, "# plug in a car")
    out += proc.stdout.readline()
    port = int(re.search(r"sim: broker 127\.0\.0\.1:(\d+) \(", out).group(1))
    agent = int(re.search(r"agent powered on \(pid (\d+)\)", out).group(1))
    page = int(re.search(r"sim: page http://127\.0\.0\.1:(\d+)/ ", out).group(1))
    assert listening(page)
    # The next step is ready to paste: the printed lines run as they are.
    steps = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert steps[0] == "export EVSE_BROKER=127.0.0.1:%d" % port, out
    status = subprocess.run(["bash", "-c", "%s; %s" % (steps[0], steps[2].split("#")[0])],
                            capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert status.returncode == 0 and "charger-1 on" in status.stdout, status.stderr
    assert os.listdir(tmp)  # the broker's files, while it runs
    proc.send_signal(signal.SIGHUP)  # the terminal closed
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "sim: stopped" in rest, rest
    assert gone(agent) and not listening(port) and not listening(page)
    assert os.listdir(tmp) == []


def test_make_sim_stops_on_ctrl_c_without_interrupt_noise(tmp_path, mpy_dir):
    proc = subprocess.Popen(["make", "--no-print-directory", "sim",
                             "ARGS=--state-dir %s" % (tmp_path / "flash")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out = read_until(proc, "# plug in a car", seconds=120)
    agent = int(re.search(r"agent powered on \(pid (\d+)\)", out).group(1))
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    rest, _ = proc.communicate(timeout=30)
    assert "sim: stopped" in rest and "Interrupt" not in rest and "Traceback" not in rest, rest
    assert gone(agent)


def test_the_agent_ends_when_its_bench_is_killed(broker, tmp_path, mpy_dir):
    proc = launch(broker, tmp_path / "flash")
    c = Charger(broker.address)
    try:
        out = read_until(proc, "agent powered on")
        agent = int(re.search(r"agent powered on \(pid (\d+)\)", out).group(1))
        c.wait(lambda: c.availability == "online", 20)
        proc.kill()  # no clean shutdown: the bench link just closes
        proc.wait()
        assert gone(agent), "an orphaned agent would go on answering MQTT"
        c.wait(lambda: c.availability == "offline", 10)  # its last will
    finally:
        c.close()


SCRIPT = """
import sys, time
sys.path.insert(0, %r)
from tools.bench import children
from tools.bench.broker import Broker
children.exit_on_hangup()  # as host_tests/conftest.py does for a test run
b = Broker(Broker.preferred()).start()
print(b.port, b.proc.pid, b.dir, flush=True)
time.sleep(60)
"""


def test_an_interrupted_run_stops_its_brokers_and_removes_their_files(tmp_path):
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT % ROOT], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        port, pid, path = proc.stdout.readline().split()
        assert alive(int(pid)) and os.path.isdir(path)
        proc.send_signal(sig)
        proc.communicate(timeout=30)
        assert gone(int(pid)), sig
        assert not listening(int(port)) and not os.path.exists(path), sig
