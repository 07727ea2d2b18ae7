"""The installation config's checks (firmware/charger/config.py): each mistake named, none let
through."""
import pytest

import config

GOOD = {"device_id": "garage-1", "supply_voltage": 230, "phases": 1, "max_current": 32,
        "broker": "mqtt.local:1883"}


def test_a_good_config_passes():
    assert config.check(dict(GOOD)) == []
    assert config.check(dict(GOOD, discovery=False, discovery_prefix="ha",
                             site={"id": "home", "fuse_current": 25, "phases": [2]})) == []
    assert config.check(dict(GOOD, phases=3, phase_switch=True)) == []


@pytest.mark.parametrize("change,message", [
    ({"discovery": "false"}, "discovery must be true or false"),
    ({"discovery_prefix": "home/#"}, "discovery_prefix must be"),
    ({"site": {"id": "home"}}, "site.fuse_current"),
    ({"site": {"id": "a/b", "fuse_current": 25}}, "site.id"),
    ({"site": {"id": "home", "fuse_current": 25, "phases": [1, 2]}}, "site.phases"),
    ({"site": {"id": "home", "fuse_current": 25, "fallback_current": -1}}, "site.fallback_current"),
    ({"site": "home"}, "site must be an object"),
    ({"phases": 2}, "phases must be 1 or 3"),
    ({"phase_switch": True}, "phase_switch needs phases 3"),
    ({"phases": 3, "phase_switch": 1}, "phase_switch must be true or false"),
])
def test_each_mistake_is_named(change, message):
    errors = config.check(dict(GOOD, **change))
    assert any(message in e for e in errors), errors


OCPP = {"device_id": "garage-1", "supply_voltage": 230, "phases": 1, "max_current": 32,
        "uplink": "ocpp", "ocpp": {"url": "ws://csms.local:8180/ocpp"}}


def test_an_ocpp_config_needs_no_broker_and_both_needs_both():
    assert config.check(dict(OCPP)) == []
    assert config.check(dict(OCPP, ocpp={"url": "wss://csms.example/ocpp", "ca_file": "ca.der",
                                         "password": "s3cret", "id_tag": "GARAGE",
                                         "timeout": 10})) == []
    assert config.check(dict(OCPP, uplink="both")) == ["missing broker"]
    assert config.check(dict(GOOD, uplink="both", ocpp=OCPP["ocpp"])) == []


@pytest.mark.parametrize("change,message", [
    ({"uplink": "zigbee"}, "uplink must be mqtt, ocpp or both"),
    ({"ocpp": None}, "ocpp must be an object"),
    ({"ocpp": {"url": "http://csms/ocpp"}}, "ocpp.url must be a ws:// or wss:// URL"),
    ({"ocpp": {"url": "wss://csms/ocpp"}}, "a wss:// ocpp.url needs ocpp.ca_file"),
    ({"ocpp": {"url": "ws://csms/ocpp", "id_tag": "x" * 21}}, "ocpp.id_tag must be"),
    ({"ocpp": {"url": "ws://csms/ocpp", "password": 1234}}, "ocpp.password must be"),
    ({"ocpp": {"url": "ws://csms/ocpp", "timeout": 0}}, "ocpp.timeout must be 1-300 s"),
])
def test_each_ocpp_mistake_is_named(change, message):
    errors = config.check(dict(OCPP, **change))
    assert any(message in e for e in errors), errors


def test_uplinks_is_a_list_and_the_older_uplink_is_still_read():
    # `"uplinks": [...]` names the uplinks in the order the runner builds them (the last runs
    # in the calling thread); `"uplink": "mqtt" | "ocpp" | "both"` means the same lists.
    mqtt_ocpp = dict(GOOD, ocpp=OCPP["ocpp"])
    assert config.uplinks(dict(GOOD)) == ["mqtt"]
    assert config.uplinks(dict(OCPP)) == ["ocpp"]
    assert config.uplinks(dict(mqtt_ocpp, uplink="both")) == ["mqtt", "ocpp"]
    assert config.uplinks(dict(mqtt_ocpp, uplinks=["ocpp", "mqtt"])) == ["ocpp", "mqtt"]
    assert config.check(dict(mqtt_ocpp, uplinks=["ocpp", "mqtt"])) == []
    assert config.check(dict(GOOD, uplinks=["mqtt"])) == []
    ocpp_only = {k: v for k, v in OCPP.items() if k != "uplink"}
    assert config.check(dict(ocpp_only, uplinks=["ocpp"])) == []
    assert config.check(dict(ocpp_only, uplinks=["ocpp", "mqtt"])) == ["missing broker"]
    assert [u[0] for u in config.UPLINKS] == ["mqtt", "ocpp"]  # test_layers.py: each one's module


@pytest.mark.parametrize("change,message", [
    ({"uplinks": "mqtt"}, "uplinks must list one or more of mqtt, ocpp, each once"),
    ({"uplinks": []}, "uplinks must list one or more of mqtt, ocpp, each once"),
    ({"uplinks": ["mqtt", "mqtt"]}, "uplinks must list one or more of mqtt, ocpp, each once"),
    ({"uplinks": ["http"]}, "uplinks must list one or more of mqtt, ocpp, each once"),
    ({"uplinks": [["mqtt"]]}, "uplinks must list one or more of mqtt, ocpp, each once"),
    ({"uplinks": ["mqtt"], "uplink": "mqtt"}, "give uplinks or the older uplink, not both"),
    ({"uplink": ["mqtt"]}, "uplink must be mqtt, ocpp or both"),
])
def test_each_uplinks_mistake_is_named(change, message):
    assert config.check(dict(GOOD, **change)) == [message]
