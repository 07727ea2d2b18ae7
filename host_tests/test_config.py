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
    assert [u[0] for u in config.UPLINKS] == ["mqtt", "ocpp", "http"]  # test_layers: modules


@pytest.mark.parametrize("change,message", [
    ({"uplinks": "mqtt"}, "uplinks must list one or more of mqtt, ocpp, http, each once"),
    ({"uplinks": []}, "uplinks must list one or more of mqtt, ocpp, http, each once"),
    ({"uplinks": ["mqtt", "mqtt"]}, "uplinks must list one or more of mqtt, ocpp, http, each once"),
    ({"uplinks": ["zigbee"]}, "uplinks must list one or more of mqtt, ocpp, http, each once"),
    ({"uplinks": [["mqtt"]]}, "uplinks must list one or more of mqtt, ocpp, http, each once"),
    ({"uplinks": ["mqtt"], "uplink": "mqtt"}, "give uplinks or the older uplink, not both"),
    ({"uplink": ["mqtt"]}, "uplink must be mqtt, ocpp or both"),
])
def test_each_uplinks_mistake_is_named(change, message):
    assert config.check(dict(GOOD, **change)) == [message]


TOKEN = "0123456789abcdef"  # 16 characters: the shortest token http.md allows


def test_the_http_front_needs_a_token_and_no_broker():
    # HTTP alone: a charger with no broker (docs/http.md); with MQTT beside it, both.
    http_only = {k: v for k, v in GOOD.items() if k != "broker"}
    assert config.check(dict(http_only, uplinks=["http"], http={"token": TOKEN})) == []
    assert config.check(dict(GOOD, uplinks=["mqtt", "http"],
                             http={"token": TOKEN, "port": 8080, "host": "0.0.0.0"})) == []
    assert config.check(dict(GOOD, uplinks=["mqtt"], http={"token": "short"})) == []  # unused


@pytest.mark.parametrize("http, message", [
    (None, "http must be an object with at least token"),
    ({}, "http.token must be 16-128 printable characters without spaces"),
    ({"token": TOKEN[:-1]}, "http.token must be 16-128 printable characters without spaces"),
    ({"token": TOKEN + " x"}, "http.token must be 16-128 printable characters without spaces"),
    ({"token": "x" * 129}, "http.token must be 16-128 printable characters without spaces"),
    ({"token": 1234567890123456789}, "http.token must be 16-128 printable"),
    ({"token": TOKEN, "port": 0}, "http.port must be 1-65535"),
    ({"token": TOKEN, "port": "80"}, "http.port must be 1-65535"),
    ({"token": TOKEN, "host": ""}, "http.host must be an address to listen on"),
])
def test_each_http_mistake_is_named(http, message):
    # Off without a token: "http" in uplinks with no usable token is a config error, at boot
    # and in make deploy's check (the same code), never a front that serves without one.
    errors = config.check(dict(GOOD, uplinks=["mqtt", "http"], http=http))
    assert len(errors) == 1 and errors[0].startswith(message), errors
