"""Helpers for the end-to-end tests: a broker, the make-sim launcher, an MQTT client."""
import os
import signal
import subprocess
import sys
import threading
import time

from tools.bench import children
from tools.bench.broker import Broker
from tools.paths import ROOT
from tools.evctl import Charger
from tools.bench.sim import Sim, parse



def launch(broker, state_dir, *extra):
    """make sim's launcher as a subprocess (the way a user starts it)."""
    cmd = [sys.executable, "-m", "tools.bench.sim", "--broker", broker.address,
           "--state-dir", str(state_dir), *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    children.adopt(proc, lambda: _end(proc))  # even if the test run is interrupted
    return proc


def _end(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop(proc):
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    children.release(proc)
    return proc.returncode, out


class InProcessSim:
    """The same launcher's Sim in a thread of this process, so a test can see the bench."""

    def __init__(self, argv, unix_base_ms=None, config=None):
        self.sim = Sim(parse(argv))
        if unix_base_ms is not None:  # the board's wall clock at bench time 0
            self.sim.unix_base_ms = unix_base_ms
        if config:  # installation settings the launcher has no option for (merged one deep)
            made = self.sim.config
            self.sim.config = lambda: _merge(made(), config)
        self.sim.start()
        self.thread = threading.Thread(target=self.sim.run, daemon=True)
        self.thread.start()

    @property
    def bench(self):
        return self.sim.bench

    def close(self):
        self.sim.stop.set()
        self.thread.join(5)
        if self.thread.is_alive() and self.sim.agent:
            # Stuck in a tick: the agent's control loop stopped answering. Cutting its
            # power ends the wait (the link closes), so a failed test cannot hang the run.
            self.sim.agent.proc.kill()
            self.thread.join(5)
        with self.sim.lock:
            self.sim.shutdown()


def _merge(cfg, extra):
    out = dict(cfg)
    for key, value in extra.items():
        out[key] = dict(out.get(key) or {}, **value) if isinstance(value, dict) else value
    return out


def online(charger, timeout=20):
    charger.wait(lambda: charger.availability == "online" and charger.states, timeout)
