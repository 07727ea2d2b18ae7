"""make sim with a site, as a user starts it: the launcher, a real broker, the agents under
micropython in real time with their MQTT uplinks (docs/bench.md, "A site"). The timings
are the bench-time tests' (test_site_bench.py); this proves the wiring."""
import json
import threading

import paho.mqtt.client as mqtt
import pytest

from e2e import Charger, HttpApi, launch, online, stop
from tools.bench.broker import free_port
from tools.bench.sim import parse

TOKEN = "site-test-token-0123456789"


class Site:
    """The site's bench topics and the site's own, seen from outside."""

    def __init__(self, address):
        self.readings = []
        self.meter = []
        self.records = {}
        self.cond = threading.Condition()
        host, _, port = address.rpartition(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._message
        self.client.connect(host, int(port))
        self.client.subscribe("bench/site/home/readings")
        self.client.subscribe("site/home/#")
        self.client.loop_start()

    def _message(self, client, userdata, msg):
        with self.cond:
            if msg.topic == "bench/site/home/readings":
                self.readings.append(json.loads(msg.payload))
            elif msg.topic == "site/home/meter":
                self.meter.append(json.loads(msg.payload))
            elif msg.topic.startswith("site/home/chargers/"):
                self.records[msg.topic.rsplit("/", 1)[1]] = json.loads(msg.payload)
            self.cond.notify_all()

    def wait(self, predicate, timeout=20):
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise TimeoutError("the site did not get there: %s" % (self.readings[-1:],))

    def offers(self):
        return {c: v["offered"] for c, v in self.readings[-1]["chargers"].items()}

    def publish(self, topic, body):
        self.client.publish(topic, body if isinstance(body, bytes) else json.dumps(body), qos=1)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_two_chargers_a_kettle_and_a_silent_meter(broker, tmp_path, mpy_dir):
    http_port = free_port()  # charger-1's HTTP front; charger-2's the next port
    proc = launch(broker, tmp_path / "flash", "--chargers", "2", "--site-fuse", "25",
                  "--meter-timeout", "3", "--http-port", str(http_port), "--api-token", TOKEN)
    site = Site(broker.address)
    chargers = [Charger(broker.address, "charger-%d" % k) for k in (1, 2)]
    try:
        for c in chargers:
            online(c)
            c.ev(connected=True, request=True)
        site.publish("bench/site/home/household", {"currents": [2]})
        # (25 - 1 - 2) / 2 = 11 A each, as the pilot offers it.
        site.wait(lambda: site.readings and all(
            abs(o - 11) <= 0.3 for o in site.offers().values()) and abs(
            site.readings[-1]["currents"][0] - 24) <= 0.5)
        r = site.readings[-1]
        assert r["fuse"] == 25 and r["household"] == [2.0] and r["meter"] is True
        assert r["chargers"]["charger-1"]["phases"] == [1]
        assert not r["overFuse"]
        assert site.meter[-1]["currents"] and type(site.meter[-1]["ts"]) is int
        assert set(site.records) == {"charger-1", "charger-2"}
        assert site.records["charger-2"]["wantsA"] == 32.0
        state = chargers[0].read()["state"]
        assert state["limitedBy"] == "site" and abs(state["limits"]["site"]["share"] - 11) <= 0.3

        site.publish("bench/site/home/household", {"currents": [11]})  # a 9 A kettle
        site.wait(lambda: all(abs(o - 6.5) <= 0.3 for o in site.offers().values()))

        site.publish("site/home/meter", b'{"currents": [-3]}')  # a broken bridge's
        chargers[0].wait(lambda: chargers[0].read()["state"]["limits"]["site"]["ignored"] == 1)

        site.publish("bench/site/home/meter", {"on": False})
        site.wait(lambda: site.readings[-1]["meter"] is False and all(
            o == 0 for o in site.offers().values()))  # fallback_current 0
        state = chargers[1].read()["state"]
        assert state["limitedBy"] == "site" and state["limits"]["site"]["fallback"] is True
        site.publish("bench/site/home/meter", {"on": True})
        site.wait(lambda: all(abs(o - 6.5) <= 0.3 for o in site.offers().values()))

        site.publish("bench/site/home/household", {"currents": "lots"})
        # Nested too deep for json.loads (RecursionError): before, it ended the site bench's
        # MQTT thread, and the household below never changed.
        site.publish("bench/site/home/household", b"[" * 4000)
        site.publish("bench/site/home/household", {"currents": [4]})
        site.wait(lambda: site.readings[-1]["household"] == [4.0])
        for k in (1, 2):  # each charger serves its own HTTP front, on its own port
            assert HttpApi(http_port + k - 1, TOKEN, "charger-%d" % k).read()["id"] == \
                "charger-%d" % k
        chargers[1].power(False)  # the bench's power cut still works per charger
        site.wait(lambda: site.readings[-1]["chargers"]["charger-2"]["powerOn"] is False)
    finally:
        for c in chargers:
            c.close()
        site.close()
        code, out = stop(proc)
    assert code == 0 and "sim: stopped" in out, out
    assert "sim: ignored bench/site/home/household: currents must be a list of up to 1 current" \
        in out
    for k in (1, 2):
        assert "sim: api http://127.0.0.1:%d/ev-charger/charger-%d (token %s)" % (
            http_port + k - 1, k, TOKEN) in out, out


@pytest.mark.parametrize("argv,message", [
    (["--chargers", "3"], "--chargers 3 needs --site-fuse A"),
    (["--chargers", "0", "--site-fuse", "25"], "--chargers must be 1 to 12"),
    (["--chargers", "2", "--site-fuse", "25", "--device-id", "x"], "--device-id cannot be"),
    (["--chargers", "2", "--site-fuse", "25", "--phases", "3"], "--phases 3 needs --site-phases 3"),
    (["--chargers", "2", "--site-fuse", "25", "--site-lines", "1,4", "--site-phases", "3"],
     "--site-lines must give one site phase (1-3) for each of the 2 chargers"),
    (["--chargers", "2", "--site-fuse", "2"], "site.fuse_current must be a number 6-1000"),
    (["--chargers", "2", "--site-fuse", "25", "--meter-timeout", "0"],
     "site.meter_timeout_s must be a number 1-3600"),
    (["--chargers", "2", "--site-fuse", "25", "--household", "/nonexistent/day.json"],
     "/nonexistent/day.json: No such file or directory"),
    (["--chargers", "2", "--site-fuse", "25", "--http-port", "65535"],
     "--http-port must leave a port for each charger: 1-65534"),
    (["--api-token", "short"], "--api-token must be 16-128 printable characters"),
])
def test_a_bad_site_option_is_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and message in err[-1], err


@pytest.mark.parametrize("day,message", [
    ("not json", "is not valid JSON"),
    ("[]", "must be a non-empty list"),
    ("[[0, [1]], [-1, [2]]]", "entry 1 must be [t_seconds >= 0, [L1, L2, L3]]"),
    ("[[0, [1, 2]]]", "entry 0's currents must be a list of up to 1 current in A"),
    ("[[0, [\"x\"]]]", "entry 0's currents: 'x' is not a current from 0 to 1000 A"),
])
def test_a_bad_household_file_is_one_line(day, message, tmp_path, capsys):
    path = tmp_path / "day.json"
    path.write_text(day)
    with pytest.raises(SystemExit) as e:
        parse(["--chargers", "2", "--site-fuse", "25", "--household", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and message in err[-1], err
    assert path.read_text() == day  # read, never touched
