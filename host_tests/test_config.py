"""The installation config's checks (firmware/config.py): each mistake named, none let through."""
import pytest

import config

GOOD = {"device_id": "garage-1", "supply_voltage": 230, "phases": 1, "max_current": 32,
        "broker": "mqtt.local:1883"}


def test_a_good_config_passes():
    assert config.check(dict(GOOD)) == []
    assert config.check(dict(GOOD, discovery=False, discovery_prefix="ha",
                             site={"id": "home", "fuse_current": 25, "phases": [2]})) == []


@pytest.mark.parametrize("change,message", [
    ({"discovery": "false"}, "discovery must be true or false"),
    ({"discovery_prefix": "home/#"}, "discovery_prefix must be"),
    ({"site": {"id": "home"}}, "site.fuse_current"),
    ({"site": {"id": "a/b", "fuse_current": 25}}, "site.id"),
    ({"site": {"id": "home", "fuse_current": 25, "phases": [1, 2]}}, "site.phases"),
    ({"site": {"id": "home", "fuse_current": 25, "fallback_current": -1}}, "site.fallback_current"),
    ({"site": "home"}, "site must be an object"),
    ({"phases": 2}, "phases must be 1 or 3"),
])
def test_each_mistake_is_named(change, message):
    errors = config.check(dict(GOOD, **change))
    assert any(message in e for e in errors), errors
