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


UPLINKS_WRONG = "uplinks must list mqtt, ocpp, http, each at most once ([]: no network)"


@pytest.mark.parametrize("change,message", [
    ({"uplinks": "mqtt"}, UPLINKS_WRONG),
    ({"uplinks": ["mqtt", "mqtt"]}, UPLINKS_WRONG),
    ({"uplinks": ["zigbee"]}, UPLINKS_WRONG),
    ({"uplinks": [["mqtt"]]}, UPLINKS_WRONG),
    ({"uplinks": ["mqtt"], "uplink": "mqtt"}, "give uplinks or the older uplink, not both"),
    ({"uplink": ["mqtt"]}, "uplink must be mqtt, ocpp or both"),
])
def test_each_uplinks_mistake_is_named(change, message):
    assert config.check(dict(GOOD, **change)) == [message]


# -- the Modbus meters (docs/meters.md) and a charger with no network

SITE = {"id": "home", "fuse_current": 25, "phases": [1]}
METERS = {"bus": {"baud": 19200, "parity": "E", "stop": 1}, "ev": {"model": "SDM630",
          "address": 11}, "mains": {"model": "B23", "address": 12}, "period_ms": 1000}
ALONE = {"device_id": "garage-1", "supply_voltage": 230, "phases": 1, "max_current": 32,
         "uplinks": [], "site": SITE, "meters": METERS}


def test_a_charger_with_its_own_meters_needs_no_network():
    # uplinks [] is a charger with no network at all: its site balances on its own mains
    # meter, so neither a broker nor the meter's topic is needed.
    assert config.uplinks(dict(ALONE)) == []
    assert config.check(dict(ALONE)) == []
    assert config.check(dict(GOOD, meters={"ev": {"model": "EM340", "address": 1}})) == []
    # Without its own mains meter a site needs the meter's topic, so MQTT.
    assert config.check(dict(ALONE, meters={"ev": {"model": "SDM630", "address": 1}})) == [
        "site needs the mqtt uplink (the meter's topic) or meters.mains"]
    assert config.check(dict(OCPP, site=SITE)) == [
        "site needs the mqtt uplink (the meter's topic) or meters.mains"]
    assert config.check(dict(ALONE, webhook_url="http://x/hook", webhook_secret="s")) == [
        "webhook_url needs an uplink: with uplinks [] there is no network"]


@pytest.mark.parametrize("meters,message", [
    ("SDM630", "meters must be an object"),
    ({"ev": {"model": "SDM630", "address": 11}, "evv": {}}, "meters.evv is not known"),
    ({"bus": [], "ev": {"model": "SDM630", "address": 11}}, "meters.bus must be an object"),
    (dict(METERS, bus={"baud": 9601}), "meters.bus.baud must be one of 1200, 2400"),
    (dict(METERS, bus={"parity": "X"}), "meters.bus.parity must be N, E or O"),
    (dict(METERS, bus={"stop": 0}), "meters.bus.stop must be 1 or 2"),
    (dict(METERS, period_ms=100), "meters.period_ms must be 250-10000"),
    (dict(METERS, period_ms=1000.0), "meters.period_ms must be 250-10000"),
    (dict(METERS, ev={"model": "SDM999", "address": 11}),
     "meters.ev.model must be one of SDM120, SDM630, SDM72D-M-2, B23, EM340"),
    (dict(METERS, ev={"model": "SDM630", "address": 0}), "meters.ev.address must be 1-247"),
    (dict(METERS, ev={"model": "SDM630", "address": True}), "meters.ev.address must be 1-247"),
    (dict(METERS, ev="SDM630"), "meters.ev must be an object with model and address"),
    (dict(METERS, mains={"model": "B23", "address": 11}),
     "meters.ev and meters.mains share address 11"),
    ({"bus": {}}, "meters needs ev, mains or both"),
])
def test_each_meters_mistake_is_named(meters, message):
    errors = config.check(dict(ALONE, meters=meters))
    assert any(message in e for e in errors), errors


def test_a_mains_meter_needs_a_site_it_can_measure():
    no_site = {k: v for k, v in ALONE.items() if k != "site"}
    assert "meters.mains needs a site block (the fuse it guards: docs/site.md)" in \
        config.check(no_site)
    # A single-phase meter at the supply cannot guard a charger on L2.
    errors = config.check(dict(ALONE, site=dict(SITE, phases=[2]),
                               meters=dict(METERS, mains={"model": "SDM120", "address": 12})))
    assert errors == ["meters.mains: a SDM120 measures 1 phase(s), site.phases names more"]


def test_broker_is_one_address_or_a_list_tried_in_order():
    # docs/uplinks.md, "Several brokers": the uplink dials the list in order.
    assert config.brokers(dict(GOOD)) == [("mqtt.local", 1883)]
    nodes = ["mqtt-a.lan:1883", "mqtt-b.lan:8883", "10.0.0.7:1883"]
    assert config.check(dict(GOOD, broker=nodes)) == []
    assert config.brokers(dict(GOOD, broker=nodes)) == [
        ("mqtt-a.lan", 1883), ("mqtt-b.lan", 8883), ("10.0.0.7", 1883)]
    assert config.brokers(dict(GOOD, broker=["mqtt.local:1883"])) == [("mqtt.local", 1883)]


@pytest.mark.parametrize("broker,message", [
    ("mqtt.local", 'broker must be HOST:PORT (a port 1-65535), not "mqtt.local"'),
    ("mqtt.local:0", 'broker must be HOST:PORT (a port 1-65535), not "mqtt.local:0"'),
    ("mqtt://mqtt.local:1883", "broker must be HOST:PORT"),
    (["a.lan:1883", "b.lan"], 'broker entry 2 must be HOST:PORT (a port 1-65535), not "b.lan"'),
    (["a.lan:1883", "b.lan:70000"], "broker entry 2 must be HOST:PORT"),
    (["a.lan:1883", 1883], "broker entry 2 must be HOST:PORT (a port 1-65535), not 1883"),
    (["a.lan:1883", "b.lan :1883"], "broker entry 2 must be HOST:PORT"),
    (["a.lan:1883", None], "broker entry 2 must be HOST:PORT (a port 1-65535), not null"),
    (["a.lan:1883", "a.lan:1883"], "broker entry 2 repeats a.lan:1883"),
    ([], "broker must be HOST:PORT or a list of 1-8 of them"),
    (["n%d.lan:1883" % k for k in range(9)], "broker must be HOST:PORT or a list of 1-8"),
    ({"host": "a.lan"}, "broker has the wrong type"),
])
def test_each_broker_mistake_is_named(broker, message):
    errors = config.check(dict(GOOD, broker=broker))
    assert len(errors) == 1 and message in errors[0], errors


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
