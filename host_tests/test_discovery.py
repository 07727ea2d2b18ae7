"""Every Home Assistant discovery payload, field by field, and its templates rendered (with
Jinja2, as Home Assistant renders them) on the agent's real state reports. The end-to-end
proof against a real Home Assistant is test_homeassistant.py."""
import json
from datetime import datetime

import jinja2
import pytest

import discovery
from conftest import plug

UNITS = {"power": {"W", "kW"}, "energy": {"kWh"}, "current": {"A"}}


@pytest.fixture
def configs():
    d = discovery.Discovery({"device_id": "charger-1"}, "ev-charger/charger-1/", "bench-sim",
                            "9.9.9")
    return {topic: json.loads(payload) for topic, payload in
            (d.config(e) for e in discovery._ENTITIES)}


def render(template, **values):
    env = jinja2.Environment()
    env.globals["now"] = datetime.now
    return env.from_string(template).render(**values)


def test_topics_ids_and_the_device_block(configs):
    assert len(configs) == 11
    objects = set()
    for topic, c in configs.items():
        prefix, component, device, obj, tail = topic.split("/")
        assert (prefix, device, tail) == ("homeassistant", "charger-1", "config")
        assert c["uniq_id"] == "charger-1_" + obj and c["~"] == "ev-charger/charger-1"
        assert c["avty_t"] == "~/availability" and c["stat_t"] == "~/state"
        assert c["dev"] == {"ids": ["charger-1"], "name": "EV charger charger-1",
                            "mf": "micropython-evse", "mdl": "bench-sim", "sw": "9.9.9"}
        objects.add((component, obj))
    assert objects == {("sensor", "status"), ("sensor", "power"), ("sensor", "session_energy"),
                       ("sensor", "energy"), ("sensor", "offered_current"),
                       ("sensor", "limited_by"), ("sensor", "fault"), ("binary_sensor", "plug"),
                       ("switch", "charging"), ("number", "max_charge_rate"),
                       ("number", "failsafe_charge_rate")}


def test_device_classes_units_and_state_classes_match(configs):
    by = {t.split("/")[3]: c for t, c in configs.items()}
    for c in by.values():
        if c.get("dev_cla") in UNITS:
            assert c["unit_of_meas"] in UNITS[c["dev_cla"]], c
    assert (by["energy"]["stat_cla"], by["session_energy"]["stat_cla"]) == ("total_increasing",
                                                                           "total")
    assert by["power"]["stat_cla"] == by["offered_current"]["stat_cla"] == "measurement"
    assert by["limited_by"]["ent_cat"] == by["fault"]["ent_cat"] == "diagnostic"
    assert by["failsafe_charge_rate"]["ent_cat"] == "config"
    assert by["status"]["dev_cla"] == "enum" and by["plug"]["dev_cla"] == "plug"
    for n in ("max_charge_rate", "failsafe_charge_rate"):
        assert (by[n]["min"], by[n]["max"], by[n]["step"], by[n]["mode"]) == (0, 50, 0.1, "box")


def test_templates_render_on_the_agents_real_state(rig, configs):
    by = {t.split("/")[3]: c for t, c in configs.items()}
    rig.pump()

    def values():
        state = rig.last_state()
        return {o: render(c["val_tpl"], value_json=state) for o, c in by.items()}

    v = values()
    assert v["status"] == "disconnected" and v["status"] in by["status"]["ops"]
    assert (v["plug"], v["charging"], v["fault"], v["limited_by"]) == ("OFF", "ON", "none",
                                                                        "max_current")
    assert float(v["max_charge_rate"]) == 50 and float(v["failsafe_charge_rate"]) == 0
    plug(rig, 3000)
    rig.run(60000)
    rig.pump()
    v = values()
    assert v["status"] == "charging" and v["plug"] == "ON"
    assert 7300 < float(v["power"]) <= 7360 and float(v["offered_current"]) == 32
    assert float(v["session_energy"]) > 0.1 and float(v["energy"]) >= 0.1


@pytest.mark.parametrize("obj,value,kind,status", [
    ("charging", "OFF", "commands", 202), ("charging", "ON", "commands", 202),
    ("max_charge_rate", 11, "settings", 200), ("max_charge_rate", 3.7, "settings", 200),
    ("failsafe_charge_rate", 1.38, "settings", 200),
    ("max_charge_rate", 60, "settings", 422),  # what the charger refuses gets the usual reply
])
def test_command_templates_build_requests_the_agent_takes(rig, configs, obj, value, kind, status):
    by = {t.split("/")[3]: c for t, c in configs.items()}
    c = by[obj]
    assert c["cmd_t"] == "~/" + kind
    payload = render(c["cmd_tpl"], value=value)
    before = rig.read()["settings"]
    reply = rig.request(kind, payload.encode())
    assert reply["meta"]["status"] == status and reply["meta"]["requestId"].startswith("ha-")
    if status >= 400:
        assert rig.read()["settings"] == before


def test_a_charger_that_switches_phases_adds_its_select_and_the_phases_in_use(make_rig):
    # Only where the config has phase_switch: a select for phases_mode (its options the
    # setting's values as text) and a sensor of the phases in use.
    def announced(cfg):
        d = discovery.Discovery(cfg, "ev-charger/charger-1/", "bench-sim", "9.9.9")
        out = []
        d.announce(lambda topic, payload, retain: out.append((topic, json.loads(payload))))
        return {t.split("/")[3]: c for t, c in out}

    assert len(announced({"device_id": "charger-1"})) == 11
    by = announced({"device_id": "charger-1", "phase_switch": True})
    assert len(by) == 13
    select, in_use = by["phases_mode"], by["phases_in_use"]
    assert select["ops"] == ["1", "3", "auto"] and select["cmd_t"] == "~/settings"
    assert select["name"] == "Phases" and in_use["name"] == "Phases in use"
    rig = make_rig(phases=3, phase_switch=True)
    rig.run(12000)
    rig.pump()
    state = rig.last_state()
    assert render(select["val_tpl"], value_json=state) == "auto"
    assert render(in_use["val_tpl"], value_json=state) == "3"
    for option in select["ops"]:  # every option a person picks is a request the agent takes
        reply = rig.request("settings", render(select["cmd_tpl"], value=option).encode())
        assert reply["meta"]["status"] == 200, reply
        rig.pump()
        assert render(select["val_tpl"], value_json=rig.last_state()) == option
