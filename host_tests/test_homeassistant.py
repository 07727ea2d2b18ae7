"""A real Home Assistant Core (clients/homeassistant.py) on a real broker: MQTT discovery makes
one device with live entities, and Home Assistant's service calls arrive on the broker as the
command templates say. This proves the harness; the charger's own discovery is tested on it.

Skips only where Home Assistant cannot be had (no CPython 3.13, no package registry).
"""
import json
import os
import socket
import threading

import paho.mqtt.client as mqtt
import pytest

from clients.homeassistant import HomeAssistant, HomeAssistantError, installed_or_skip
from e2e import BROKERS

pytestmark = pytest.mark.brokers(*BROKERS)

DEVICE = "ha-harness-1"
BASE = "ev-charger/" + DEVICE
DEVICE_BLOCK = {"ids": [DEVICE], "name": "EV charger", "mf": "micropython-evse",
                "mdl": "harness test", "sw": "0.0.1"}
COMMON = {"~": BASE, "avty_t": "~/availability", "stat_t": "~/state", "dev": DEVICE_BLOCK}

# One entity of each kind the charger will use, in the abbreviated form it will publish.
CONFIGS = {
    ("sensor", "power"): {
        "name": "Power", "dev_cla": "power", "unit_of_meas": "W", "stat_cla": "measurement",
        "val_tpl": "{{ (value_json.data.state.currentPower * 1000) | round(0) | int }}"},
    ("number", "max_charge_rate"): {
        "name": "Max charge rate", "unit_of_meas": "kW", "min": 0, "max": 50, "step": 0.1,
        "mode": "box", "val_tpl": "{{ value_json.data.settings.max_charge_rate.value }}",
        "cmd_t": "~/settings",
        "cmd_tpl": '{"settings": {"max_charge_rate": {"value": {{ value }}, "unit": "kw"}}}'},
    ("switch", "charging"): {
        "name": "Charging",
        "val_tpl": "{{ 'ON' if value_json.data.state.status != 'idle' else 'OFF' }}",
        "cmd_t": "~/commands",
        "cmd_tpl": '{"action": {"command": "{{ \'charge\' if value == \'ON\' else \'idle\' }}"}}'},
}

# Where Home Assistant logs what it rejects or dislikes in our configs and states.
OUR_LOGGERS = ["homeassistant.components." + c for c in ("mqtt", "sensor", "number", "switch")]


def state_payload(status, power_kw, cap_kw):
    """The agent's retained state report, as docs/protocol.md shapes it (the fields used here)."""
    return json.dumps({"success": True, "data": {
        "id": DEVICE, "state": {"status": status, "currentPower": power_kw},
        "settings": {"max_charge_rate": {"value": cap_kw, "unit": "kw", "min": 0, "max": 50}}},
        "meta": {"timestamp": "2026-11-24T08:00:00Z", "seq": 1}})


class Wire:
    """A plain MQTT client: publishes like the charger, records what Home Assistant sends."""

    def __init__(self, broker):
        self.cond = threading.Condition()
        self.received = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe(
            [(BASE + "/settings", 1), (BASE + "/commands", 1)])
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "could not subscribe on the broker"

    def _message(self, client, userdata, msg):
        with self.cond:
            self.received.append((msg.topic, msg.payload.decode()))
            self.cond.notify_all()

    def publish(self, topic, payload, retain=True):
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def next_on(self, topic, timeout=10):
        """The first message on topic (removed from the record), or an AssertionError."""
        with self.cond:
            for _ in range(2):
                for i, (t, payload) in enumerate(self.received):
                    if t == topic:
                        del self.received[i]
                        return payload
                self.cond.wait_for(lambda: any(t == topic for t, _ in self.received), timeout)
        raise AssertionError("nothing on %s within %s s (got %r)" % (topic, timeout, self.received))

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="session")
def ha_install(request):
    return installed_or_skip(request.config)


@pytest.fixture
def ha(ha_install, broker, tmp_path):
    with HomeAssistant(ha_install, broker.port, tmp_path / "ha") as running:
        yield running
    print("Home Assistant timings (s):", running.timings)


@pytest.fixture
def wire(broker):
    w = Wire(broker)
    yield w
    w.close()


def entity_ids(ha):
    """entity_id by object, found through the registry's unique ids (HA derives the ids)."""
    ids = {obj: ha.entity_id("%s_%s" % (DEVICE, obj)) for _, obj in CONFIGS}
    return ids if all(ids.values()) else None


def test_discovery_states_device_commands_and_stop(ha, wire):
    for (component, obj), fields in CONFIGS.items():
        config = dict(COMMON, uniq_id="%s_%s" % (DEVICE, obj), **fields)
        wire.publish("homeassistant/%s/%s/%s/config" % (component, DEVICE, obj), json.dumps(config))
    ids = ha.wait_for(lambda: entity_ids(ha), 20, "the three discovered entities")

    # Home Assistant took every config: it reports a rejected one only in its log.
    assert not ha.log_problems(*OUR_LOGGERS), ha.log_problems(*OUR_LOGGERS)

    # No retained `online` yet: Home Assistant shows every entity unavailable.
    for entity_id in ids.values():
        assert ha.state(entity_id)["state"] == "unavailable", entity_id

    wire.publish(BASE + "/state", state_payload("charging", 7.3, 7.4))
    wire.publish(BASE + "/availability", "online")
    ha.wait_for(lambda: ha.state(ids["charging"])["state"] == "on", 10, "the switch to read on")
    power, cap = ha.state(ids["power"]), ha.state(ids["max_charge_rate"])
    assert power["state"] == "7300" and power["attributes"]["unit_of_measurement"] == "W"
    assert power["attributes"]["device_class"] == "power"
    assert power["attributes"]["state_class"] == "measurement"
    assert cap["state"] == "7.4" and cap["attributes"]["unit_of_measurement"] == "kW"
    assert (cap["attributes"]["min"], cap["attributes"]["max"], cap["attributes"]["step"],
            cap["attributes"]["mode"]) == (0, 50, 0.1, "box")

    # One device, from the shared `dev` block, holding all three entities.
    ours = [d for d in ha.devices() if ["mqtt", DEVICE] in d["identifiers"]]
    assert len(ours) == 1, ours
    device = ours[0]
    assert (device["name"], device["manufacturer"], device["model"], device["sw_version"]) == (
        "EV charger", "micropython-evse", "harness test", "0.0.1")
    by_id = {e["entity_id"]: e for e in ha.entities()}
    assert {by_id[e]["device_id"] for e in ids.values()} == {device["id"]}

    # Commands: Home Assistant renders the templates and publishes on the request topics.
    ha.call_service("number", "set_value", {"entity_id": ids["max_charge_rate"], "value": 11})
    sent = wire.next_on(BASE + "/settings")
    assert '"value": 11,' in sent  # a whole number arrives as an integer, not 11.0
    assert json.loads(sent) == {"settings": {"max_charge_rate": {"value": 11, "unit": "kw"}}}
    ha.call_service("number", "set_value", {"entity_id": ids["max_charge_rate"], "value": 3.7})
    sent = json.loads(wire.next_on(BASE + "/settings"))
    assert sent["settings"]["max_charge_rate"]["value"] == 3.7

    # Outside the number's range Home Assistant refuses the call and publishes nothing.
    with pytest.raises(HomeAssistantError) as refused:
        ha.call_service("number", "set_value", {"entity_id": ids["max_charge_rate"], "value": 60})
    assert refused.value.status == 500, refused.value

    ha.call_service("switch", "turn_off", {"entity_id": ids["charging"]})
    assert json.loads(wire.next_on(BASE + "/commands")) == {"action": {"command": "idle"}}
    ha.call_service("switch", "turn_on", {"entity_id": ids["charging"]})
    assert json.loads(wire.next_on(BASE + "/commands")) == {"action": {"command": "charge"}}
    # The refused 60 kW never reached the broker: it would sit before the commands above.
    assert not any(t == BASE + "/settings" for t, _ in wire.received), wire.received

    # The switch follows the charger's state, not the command (it has a state topic).
    assert ha.state(ids["charging"])["state"] == "on"
    wire.publish(BASE + "/state", state_payload("idle", 0, 11))
    ha.wait_for(lambda: ha.state(ids["charging"])["state"] == "off", 10, "the switch to read off")
    assert ha.state(ids["power"])["state"] == "0"
    assert ha.state(ids["max_charge_rate"])["state"] == "11"

    # The charger's last will: unavailable again.
    wire.publish(BASE + "/availability", "offline")
    ha.wait_for(lambda: ha.state(ids["power"])["state"] == "unavailable", 10, "unavailable")


    assert not ha.log_problems(*OUR_LOGGERS), ha.log_problems(*OUR_LOGGERS)

    # stop() leaves nothing running: neither hass nor anything in its process group.
    pid = ha.proc.pid
    ha.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", ha.port), timeout=2).close()
    assert os.path.getsize(ha.log_path) > 0  # the log stays for a failure's post-mortem


# -- the charger itself, through make sim's launcher, in a real Home Assistant

CHARGER = "garage-1"
OBJECTS = {"status": "sensor", "power": "sensor", "session_energy": "sensor",
           "energy": "sensor", "offered_current": "sensor", "limited_by": "sensor",
           "fault": "sensor", "plug": "binary_sensor", "charging": "switch",
           "max_charge_rate": "number", "failsafe_charge_rate": "number"}


@pytest.fixture
def charger_sim(broker, tmp_path, mpy_dir):
    from e2e import InProcessSim
    sim = InProcessSim(["--broker", broker.address, "--state-dir", str(tmp_path / "flash"),
                        "--device-id", CHARGER])
    yield sim
    sim.close()


def charger_ids(ha):
    ids = {obj: ha.entity_id("%s_%s" % (CHARGER, obj)) for obj in OBJECTS}
    return ids if all(ids.values()) else None


def test_the_charger_appears_as_one_device_and_is_controlled_from_home_assistant(
        ha, charger_sim, wire):
    sim = charger_sim
    ids = ha.wait_for(lambda: charger_ids(ha), 30, "the charger's eleven entities")
    assert not ha.log_problems(*OUR_LOGGERS + ["homeassistant.components.binary_sensor"]), \
        ha.log_problems(*OUR_LOGGERS)
    ours = [d for d in ha.devices() if ["mqtt", CHARGER] in d["identifiers"]]
    assert len(ours) == 1
    by_id = {e["entity_id"]: e for e in ha.entities()}
    assert {by_id[e]["device_id"] for e in ids.values()} == {ours[0]["id"]}
    assert by_id[ids["limited_by"]]["entity_category"] == "diagnostic"
    assert by_id[ids["failsafe_charge_rate"]]["entity_category"] == "config"

    # Live values from the retained state.
    ha.wait_for(lambda: ha.state(ids["status"])["state"] == "disconnected", 20, "disconnected")
    assert ha.state(ids["plug"])["state"] == "off"
    assert ha.state(ids["max_charge_rate"])["state"] == "50.0"
    assert ha.state(ids["status"])["attributes"]["options"] == [
        "disconnected", "connected", "charging", "idle", "suspended", "fault"]

    # A session: the entities follow it.
    with sim.sim.lock:
        sim.bench.set_ev({"connected": True, "request": True})
    ha.wait_for(lambda: ha.state(ids["status"])["state"] == "charging", 20, "charging")
    assert ha.state(ids["plug"])["state"] == "on"
    assert ha.state(ids["charging"])["state"] == "on"
    ha.wait_for(lambda: float(ha.state(ids["power"])["state"]) > 7000, 10, "power")
    assert float(ha.state(ids["offered_current"])["state"]) == 32.0

    # The cap from Home Assistant lands on the pilot.
    ha.call_service("number", "set_value", {"entity_id": ids["max_charge_rate"], "value": 3.68})
    ha.wait_for(lambda: sim.bench.readings()["pilot"]["dutyPercent"] == 26.66, 10, "16 A")
    ha.wait_for(lambda: ha.state(ids["max_charge_rate"])["state"] == "3.68", 10, "3.68 kW")
    assert ha.state(ids["limited_by"])["state"] == "max_charge_rate"

    # The switch runs idle and charge through the command slot.
    ha.call_service("switch", "turn_off", {"entity_id": ids["charging"]})
    ha.wait_for(lambda: ha.state(ids["status"])["state"] == "idle", 15, "idle")
    assert ha.state(ids["charging"])["state"] == "off"
    ha.wait_for(lambda: not sim.bench.contactor, 10, "the contactor to open")
    ha.call_service("switch", "turn_on", {"entity_id": ids["charging"]})
    ha.wait_for(lambda: ha.state(ids["status"])["state"] == "charging", 20, "charging again")
    assert ha.state(ids["max_charge_rate"])["state"] == "3.68"  # the cap survived both

    # Home Assistant restarts (its birth message): the configs come again.
    seen = []
    wire.client.subscribe("homeassistant/+/%s/+/config" % CHARGER)
    wire.client.on_message = lambda c, u, m: seen.append(m.topic)
    wire.publish("homeassistant/status", "online", retain=False)
    ha.wait_for(lambda: len(set(seen)) >= len(OBJECTS), 10, "the configs republished")
    assert not ha.log_problems(*OUR_LOGGERS), ha.log_problems(*OUR_LOGGERS)


SWITCHING = "garage-3p"


@pytest.fixture
def switching_sim(broker, tmp_path, mpy_dir):
    from e2e import InProcessSim
    sim = InProcessSim(["--broker", broker.address, "--state-dir", str(tmp_path / "flash"),
                        "--device-id", SWITCHING, "--phases", "3", "--phase-switch"])
    yield sim
    sim.close()


def test_a_charger_that_switches_phases_gets_a_select_that_switches_them(
        ha, switching_sim, wire):
    sim = switching_sim
    objects = dict(OBJECTS, phases_mode="select", phases_in_use="sensor")

    def ids():
        found = {obj: ha.entity_id("%s_%s" % (SWITCHING, obj)) for obj in objects}
        return found if all(found.values()) else None

    ids = ha.wait_for(ids, 30, "the charger's thirteen entities")
    assert not ha.log_problems(*OUR_LOGGERS + ["homeassistant.components.select"]), \
        ha.log_problems(*OUR_LOGGERS + ["homeassistant.components.select"])
    select, in_use = ids["phases_mode"], ids["phases_in_use"]
    assert ha.state(select)["attributes"]["options"] == ["1", "3", "auto"]
    ha.wait_for(lambda: ha.state(select)["state"] == "auto", 20, "auto")
    # auto: three phases once the settle time after boot has passed
    ha.wait_for(lambda: ha.state(in_use)["state"] == "3", 30, "three phases in use")

    # One phase, from Home Assistant: the select reads back what the charger reports (the
    # switch itself comes after the minimum interval: test_phases.py, test_evcc.py).
    ha.call_service("select", "select_option", {"entity_id": select, "option": "1"})
    ha.wait_for(lambda: ha.state(select)["state"] == "1", 10, "the select to read 1")
    assert sim.bench.phase_drive  # not switched at once: the minimum interval first
    # and back to auto, a string in the request
    ha.call_service("select", "select_option", {"entity_id": select, "option": "auto"})
    ha.wait_for(lambda: ha.state(select)["state"] == "auto", 10, "the select to read auto")
    assert not ha.log_problems(*OUR_LOGGERS), ha.log_problems(*OUR_LOGGERS)
