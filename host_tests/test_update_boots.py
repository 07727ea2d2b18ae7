"""Versions that fail, installed on make sim's charger and rolled back by the charger itself
(docs/ota.md, "Validity and rollback"): each boot a micropython process with the agent's
threads and its MQTT uplink on a real broker, the bundle's boot layer in sim_main, the
releases served by make sim's own download server. One fails at import, one crashes at boot
(its uplink cannot be built), one runs but never reaches its broker: the first two are back
on the old version after 3 boots, the third after its 10 minutes (the bench stepped faster
than real time: the trial counts board time). The old version then says so once, and the
same update may be asked for again. And the contactor's timings with an update asked for
during a session and while it downloads. (A good version marked valid, and the refusals, in
virtual time under both interpreters: test_update.py; the walk: test_update_walk.py.)"""
import json
import os
import threading
import time

import pytest

from e2e import HttpApi, InProcessSim, online
from ota_releases import Releases
from tools.bench.agent_process import AgentProcess
from tools.bench.broker import free_port
from tools.bench.poll import wait_for
from tools.bench.sim import parse
from tools.bench.sim_charger import Sim
from tools.client import Charger

pytestmark = pytest.mark.brokers("mosquitto")
TOKEN = "update-token-0123456789"


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    return Releases(tmp_path_factory.mktemp("releases"), sim_tree=True)


class FastSim:
    """make sim's charger with its download server, its bench stepped flat out in a thread
    of this process (board time runs several times faster than the wall clock)."""

    def __init__(self, broker, state_dir, releases, *extra, config=None):
        args = parse(["--broker", broker.address, "--state-dir", str(state_dir), "--no-page",
                      "--updates", releases.folder, *extra])
        args.ota_keys = releases.keys  # as --update-key gives them, without a key file
        self.sim = Sim(args)
        if config:  # what the launcher has no option for
            made = self.sim.config
            self.sim.config = lambda: dict(made(), **config)
        self.sim.start()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.sim.stop.is_set():
            self.sim.step()
            time.sleep(0.0001)  # the agent's threads get the cores too

    def close(self):
        self.sim.stop.set()
        self.thread.join(10)
        self.sim.shutdown()


@pytest.mark.parametrize("name,reason", [("import_error", "crashed"), ("crash", "crashed"),
                                         ("no_uplink", "uplink_not_reached")])
def test_a_version_that_fails_is_rolled_back_and_says_so(broker, tmp_path, mpy_dir,
                                                         releases, name, reason):
    sim = FastSim(broker, tmp_path / "flash", releases)
    c = Charger(broker.address, "charger-1")
    try:
        online(c)
        assert c.cap(7.4)["success"]
        body = dict(releases.release(name + ".tar"), url=sim.sim.updates.url(name + ".tar"))
        reply = c.request("update", body)
        assert reply["meta"]["status"] == 202, reply
        wait_for(lambda: [e for e in c.events if e["type"] == "update.rolled_back"], 120)
        (back,) = [e["data"] for e in c.events if e["type"] == "update.rolled_back"]
        assert back == {"deviceId": "charger-1", "version": "0.3.0", "previous": "0.2.0",
                        "reason": reason}, back
        online(c)
        read = c.read()
        assert read["metadata"]["firmware"] == "0.2.0"
        assert read["update"]["state"] == "rolled_back" and read["update"]["reason"] == reason
        assert read["settings"]["max_charge_rate"]["value"] == 7.4  # untouched by it all
        assert sim.sim.updates.gets == ["/%s.tar" % name]
        kinds = [e["type"] for e in c.events if e["type"].startswith("update.")]
        assert kinds == ["update.downloading", "update.verified", "update.rolled_back"], kinds
        # Told once: the next boot does not tell it again; the same update may be asked for.
        with sim.sim.lock:
            sim.sim._power_off()
            sim.sim._power_on()
        online(c)
        time.sleep(1)
        assert [e["type"] for e in c.events].count("update.rolled_back") == 1
        assert c.request("update", body)["meta"]["status"] == 202
    finally:
        c.close()
        sim.close()


def test_an_update_leaves_the_contactor_timings_unchanged(broker, tmp_path, mpy_dir, releases,
                                                          monkeypatch):
    # make sim's charger in real time, its threads real: the time from unplug, and from
    # C->B, to the contactor open (bench time), and each tick's round trip to the control
    # thread (wall time), in a quiet session and in one during which an update was asked
    # for (its manifest verified by the uplink's thread, its thread waiting); then the
    # download itself, with a car plugged in meanwhile: the control thread answers as fast.
    rtts = {"quiet": [], "update": [], "download": []}
    phase = ["quiet"]
    tick = AgentProcess.tick

    def timed(agent, inputs):
        t = time.perf_counter()
        out = tick(agent, inputs)
        rtts[phase[0]].append((time.perf_counter() - t) * 1000)
        return out

    monkeypatch.setattr(AgentProcess, "tick", timed)
    sim = InProcessSim(["--broker", broker.address, "--state-dir", str(tmp_path / "flash"),
                        "--no-page", "--updates", releases.folder],
                       config={"ota": {"keys": releases.keys}})
    c = Charger(broker.address, "charger-1")
    bench = sim.bench

    def ev(**fields):
        with sim.sim.lock:
            bench.set_ev(fields)
            return bench.t

    def opened_after(t0):
        wait_for(lambda: not bench.contactor and bench.contactor_log[-1][0] >= t0, 5)
        return bench.contactor_log[-1][0] - t0

    def session():
        ev(connected=True, request=True)
        wait_for(lambda: bench.contactor, 10)
        time.sleep(2)

    try:
        online(c)
        latency = {}
        session()
        latency["quiet", "C->B"] = opened_after(ev(request=False))
        ev(request=True)
        wait_for(lambda: bench.contactor, 10)
        time.sleep(1)
        latency["quiet", "unplug"] = opened_after(ev(connected=False))
        phase[0] = "update"  # asked for during a session: verified, waiting for it to end
        session()
        body = dict(releases.release("note.tar"), url=sim.sim.updates.url("note.tar"))
        reply = c.request("update", body)
        assert reply["data"]["state"] == "waiting", reply
        time.sleep(2)
        assert not sim.sim.updates.gets
        sim.sim.updates.slow("note.tar", 4096)
        latency["update", "C->B"] = opened_after(ev(request=False))
        wait_for(lambda: sim.sim.updates.gets, 5)  # the contactor opened: the download
        ev(request=True)  # the car asks again: the update holds it at 0 A
        phase[0] = "download"  # with the car asking for current all along
        t0 = bench.t
        wait_for(lambda: [e for e in c.events if e["type"] == "update.verified"], 20)
        assert not [t for t, closed in bench.contactor_log if t > t0]  # open throughout
    finally:
        c.close()
        sim.close()
    print("contactor open (bench ms): %s" % latency)
    for p in rtts:
        r = sorted(rtts[p])
        print("%s: tick round trip median %.2f ms, p99 %.2f ms, max %.2f ms over %d ticks"
              % (p, r[len(r) // 2], r[len(r) * 99 // 100], r[-1], len(r)))
    assert latency["update", "C->B"] <= latency["quiet", "C->B"], latency
    quiet = sorted(rtts["quiet"])[len(rtts["quiet"]) // 2]
    for p in ("update", "download"):
        during = sorted(rtts[p])[len(rtts[p]) // 2]
        assert during <= 2 * quiet + 1, (p, quiet, during)


def test_an_update_over_the_http_front_of_an_http_only_charger(broker, tmp_path, mpy_dir,
                                                                releases):
    # POST /ev-charger/{id}/firmware (topics.ROUTES) on a charger whose only uplink is its
    # HTTP front: the new version is valid once it has run 60 s and been asked something
    # with the token (ota.md: an HTTP-only charger's first authorised request); the next
    # one, asked nothing for its 10 minutes, goes back by itself.
    port = free_port()
    sim = FastSim(broker, tmp_path / "flash", releases, "--http-port", str(port),
                  "--api-token", TOKEN, config={"uplinks": ["http"]})
    api = HttpApi(port, TOKEN)
    rec = os.path.join(str(tmp_path / "flash"), "ota.json")

    def record():
        try:
            with open(rec) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def read():
        try:
            return api.read()
        except (OSError, AssertionError):  # restarting
            return None

    try:
        wait_for(read, 20)
        for name in ("note.tar", "note-040.tar"):
            body = dict(releases.release(name), url=sim.sim.updates.url("note.tar"))
            status, _, reply = api.call("POST", api.path + "/firmware", body)
            assert status == 202 and reply["meta"]["path"] == api.path + "/firmware", reply
            version = reply["data"]["version"]
            wait_for(lambda: (record() or {}).get("version") == version and
                     record()["boots"] >= 1, 60)
            if name == "note.tar":  # asked: on trial, then valid
                assert wait_for(read, 20)["update"]["state"] == "trial"
                wait_for(lambda: record()["state"] == "valid", 120)
            else:  # asked nothing: back by itself, and says so when asked
                wait_for(lambda: record()["state"] == "rolled_back", 120)
                update = wait_for(lambda: (read() or {}).get("update"), 30)
                assert update["state"] == "rolled_back", update
                assert update["reason"] == "uplink_not_reached", update
        assert wait_for(read, 20)["metadata"]["firmware"] == "0.3.0"
    finally:
        sim.close()
