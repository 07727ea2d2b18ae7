"""Versions that fail, installed on make sim's charger and rolled back by the charger itself
(docs/ota.md, "Validity and rollback"): each boot a micropython process with the agent's
threads and its MQTT uplink on a real broker, the bundle's boot layer in sim_main, the
releases served by make sim's own download server. One fails at import, one crashes at boot
(its uplink cannot be built), one runs but never reaches its broker: the first two are back
on the old version after 3 boots, the third after its 10 minutes (the bench stepped faster
than real time: the trial counts board time). The old version then says so once, and the
same update may be asked for again. (A good version marked valid, and the refusals, in
virtual time under both interpreters: test_update.py; the walk: test_update_walk.py.)"""
import threading
import time

import pytest

from e2e import online
from ota_releases import Releases
from tools.bench.poll import wait_for
from tools.bench.sim import parse
from tools.bench.sim_charger import Sim
from tools.client import Charger

pytestmark = pytest.mark.brokers("mosquitto")


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    return Releases(tmp_path_factory.mktemp("releases"), sim_tree=True)


class FastSim:
    """make sim's charger with its download server, its bench stepped flat out in a thread
    of this process (board time runs several times faster than the wall clock)."""

    def __init__(self, broker, state_dir, releases):
        args = parse(["--broker", broker.address, "--state-dir", str(state_dir), "--no-page",
                      "--updates", releases.folder])
        args.ota_keys = releases.keys  # as --update-key gives them, without a key file
        self.sim = Sim(args)
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
