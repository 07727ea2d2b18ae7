"""The dynamic limit, the failsafe and lowest-wins (docs/protocol.md, the dynamic limit), on both
interpreters."""
import pytest

from conftest import duty, plug

PATH = "/ev-charger/charger-1/limit"


def limit(rig, value=None, unit="a", ttl=None, source="evcc", rid="l-1", raw=None):
    body = raw if raw is not None else {"requestId": rid, "limit": None if value is None else
                                        {"value": value, "unit": unit}, "source": source}
    if ttl is not None:
        body["ttl"] = ttl
    if value is None and raw is None:
        body.pop("source")
    reply = rig.request("limit", body)
    assert reply["meta"]["path"] == PATH
    return reply


def state(rig):
    return rig.read()["state"]


def charging(rig, **kw):
    plug(rig, 3000, **kw)
    assert rig.bench.contactor
    rig.run(5000)  # 5 s quiet: the next raise applies at once too


def test_a_dynamic_limit_lowers_the_duty_at_once_and_binds(rig):
    charging(rig)
    reply = limit(rig, 10, ttl=60)
    assert reply["meta"]["status"] == 200 and reply["success"]
    data = reply["data"]
    assert data["limit"] == {"value": 10, "unit": "a"} and data["source"] == "evcc"
    assert data["deviceId"] == "charger-1" and data["expiresAt"].endswith("Z")
    t0 = rig.bench.t
    rig.run_until(lambda: duty(rig) == 16.66, 50)
    assert rig.bench.t - t0 <= 20
    s = state(rig)
    assert s["limitedBy"] == "dynamic_limit" and s["offeredCurrent"] == 10.0
    lim = s["limits"]
    assert lim["effectiveCurrent"] == 10.0 and lim["failsafe"] is False
    assert lim["dynamic"] == {"value": 10, "unit": "a", "source": "evcc",
                              "expiresAt": data["expiresAt"]}
    assert lim["maxChargeRate"] == {"value": 50, "unit": "kw"} and lim["site"] is None


@pytest.mark.parametrize("kw,da", [(2.3, 100), (1.3799, 59), (11.0, 320)])
def test_kw_limits_convert_like_the_cap(rig, kw, da):
    charging(rig)
    assert limit(rig, kw, unit="kW")["meta"]["status"] == 200
    rig.run(100)
    assert state(rig)["limits"]["effectiveCurrent"] == da / 10


def test_each_source_binds_in_turn(make_rig):
    rig = make_rig(max_current=20, cable_current=16)
    charging(rig)
    assert state(rig)["limitedBy"] == "cable" and state(rig)["offeredCurrent"] == 16.0
    rig.settings(max_charge_rate=3.0)  # 13.0 A
    rig.run(100)
    assert state(rig)["limitedBy"] == "max_charge_rate" and state(rig)["offeredCurrent"] == 13.0
    limit(rig, 8, ttl=1)
    rig.run(100)
    assert state(rig)["limitedBy"] == "dynamic_limit" and state(rig)["offeredCurrent"] == 8.0
    rig.request("settings", {"requestId": "f", "settings": {
        "failsafe_charge_rate": {"value": 1.61, "unit": "kw"}}})  # 7.0 A
    rig.run(1000)  # the ttl runs out: the failsafe binds
    assert state(rig)["limitedBy"] == "failsafe" and state(rig)["offeredCurrent"] == 7.0


def test_max_current_binds_without_other_ceilings(make_rig):
    rig = make_rig(max_current=16)
    charging(rig)
    s = state(rig)
    assert s["limitedBy"] == "max_current" and s["limits"]["effectiveCurrent"] == 16.0


def test_expiry_applies_the_failsafe_within_a_tick_of_the_deadline(rig):
    charging(rig)
    rig.request("settings", {"requestId": "f", "settings": {
        "failsafe_charge_rate": {"value": 1.38, "unit": "kw"}}})  # 6 A
    limit(rig, 10, ttl=30)
    t_set = rig.bench.t
    rig.run_until(lambda: duty(rig) == 10.0, 40000)  # 6 A is 10 %
    # The deadline counts from the tick that took the request (the process rig replies a
    # tick later): the failsafe is on the wire within one tick of it, plus the bench's step.
    assert 30000 - 10 <= rig.bench.t - t_set <= 30000 + 30
    rig.run(200)
    expired = rig.events("limit.expired")
    assert len(expired) == 1
    assert expired[0]["data"]["source"] == "evcc"
    assert expired[0]["data"]["failsafe"] == {"value": 1.38, "unit": "kw"}
    s = state(rig)
    assert s["limitedBy"] == "failsafe" and s["limits"]["failsafe"] is True
    assert s["limits"]["dynamic"] is None
    limit(rig, 12, ttl=60)  # a new limit ends the failsafe
    rig.run(5100)
    assert duty(rig) == 20.0 and state(rig)["limits"]["failsafe"] is False


def test_renewals_keep_it_alive_and_never_touch_flash(rig):
    plug(rig, 8000, request=False)  # offered, not drawn: no energy register writes either
    writes = rig.read()["diagnostics"]["flashWrites"]
    limit(rig, 10, ttl=60)
    after_first = rig.read()["diagnostics"]["flashWrites"]
    assert after_first == writes + 1  # the "controller in charge" flag, once
    for _ in range(10):
        rig.run(30000)
        assert limit(rig, 10, ttl=60)["meta"]["status"] == 200
    assert rig.events("limit.expired") == [] and duty(rig) == 16.66
    assert rig.read()["diagnostics"]["flashWrites"] == after_first


def test_a_clear_returns_to_the_other_ceilings(rig):
    charging(rig)
    limit(rig, 10)
    rig.run(100)
    reply = limit(rig, None)
    assert reply["meta"]["status"] == 200 and reply["data"] == {"deviceId": "charger-1",
                                                                "limit": None}
    rig.run_until(lambda: duty(rig) == 53.33, 5100)  # a raise: at the vehicle's pace
    s = state(rig)
    assert s["limitedBy"] == "max_current" and s["limits"]["dynamic"] is None
    assert [e["data"]["source"] for e in rig.events("limit.cleared")] == ["evcc"]
    assert rig.events("limit.expired") == []


def test_a_power_cut_in_charge_comes_back_in_the_failsafe(make_rig, tmp_path):
    rig = make_rig(state_dir=tmp_path / "f")
    charging(rig)
    rig.request("settings", {"requestId": "f", "settings": {
        "failsafe_charge_rate": {"value": 1.38, "unit": "kw"}}})
    limit(rig, 20, ttl=600)
    rig.run(1000)
    rig.power_cut()
    rig.run(1000)
    rig.boot()
    start = len(rig.bench.duty_log)
    rig.run(5000)
    offered = [c for _, c in rig.bench.duty_log[start:] if not rig.bench.x1_or_f(c)]
    assert offered and max(offered) == 1000  # 6 A from the first offer, never the 32 A cap
    s = state(rig)
    assert s["limitedBy"] == "failsafe" and s["limits"]["failsafe"] is True
    limit(rig, None)  # the controller says goodbye: back to the cap
    rig.run(5100)
    assert duty(rig) == 53.33


def test_the_default_failsafe_pauses_a_dead_controllers_session(rig):
    charging(rig)
    limit(rig, 16, ttl=5)
    rig.run(6000)
    s = state(rig)
    assert s["status"] == "suspended" and s["limitedBy"] == "failsafe"
    assert rig.bench.x1


def test_a_zero_limit_suspends_and_does_not_take_the_slot(rig):
    charging(rig, obeysPilot=False)
    rig.command("idle", actionId="a1")  # in flight for 6 s
    reply = limit(rig, 0)
    assert reply["meta"]["status"] == 200  # never 409
    rig.command("charge", actionId="a2", onConflict="cancel_and_replace")
    rig.run(8000)
    s = state(rig)
    assert s["status"] == "suspended" and s["offeredCurrent"] == 0 and rig.bench.x1


@pytest.mark.parametrize("body,status,code", [
    ({"limit": {"value": 10, "unit": "w"}}, 422, "UNSUPPORTED_UNIT"),
    ({"limit": {"value": 10, "unit": 5}}, 422, "UNSUPPORTED_UNIT"),
    ({"limit": {"value": "10", "unit": "a"}}, 422, "INVALID_SETTING_VALUE"),
    ({"limit": {"value": None, "unit": "a"}}, 422, "INVALID_SETTING_VALUE"),
    ({"limit": {"value": True, "unit": "a"}}, 422, "INVALID_SETTING_VALUE"),
    ({"limit": {"value": -1, "unit": "a"}}, 422, "SETTING_OUT_OF_RANGE"),
    ({"limit": {"value": 33, "unit": "a"}}, 422, "SETTING_OUT_OF_RANGE"),
    ({"limit": {"value": 50.1, "unit": "kw"}}, 422, "SETTING_OUT_OF_RANGE"),
    ({"limit": {"value": 10, "unit": "a"}, "ttl": 0}, 422, "SETTING_OUT_OF_RANGE"),
    ({"limit": {"value": 10, "unit": "a"}, "ttl": 3601}, 422, "SETTING_OUT_OF_RANGE"),
    ({"limit": {"value": 10, "unit": "a"}, "ttl": "60"}, 422, "INVALID_SETTING_VALUE"),
    ({"limit": {"value": 10, "unit": "a"}, "source": "x" * 33}, 400, "INVALID_REQUEST"),
    ({"limit": {"value": 10, "unit": "a"}, "source": 7}, 400, "INVALID_REQUEST"),
    ({"limit": {"value": 10}}, 400, "INVALID_REQUEST"),
    ({"limit": {"value": 10, "unit": "a", "x": 1}}, 400, "INVALID_REQUEST"),
    ({"limit": 10}, 400, "INVALID_REQUEST"),
    ({}, 400, "INVALID_REQUEST"),
    ({"limit": None, "ttl": 5}, 400, "INVALID_REQUEST"),
    ({"limit": {"value": 10, "unit": "a"}, "colour": 1}, 400, "INVALID_REQUEST"),
])
def test_hostile_limit_requests_change_nothing(rig, body, status, code):
    plug(rig, 3000)
    before = rig.read()
    reply = rig.request("limit", dict(body, requestId="h"))
    assert reply["success"] is False and reply["meta"]["status"] == status
    assert reply["error"]["code"] == code and reply["meta"]["requestId"] == "h"
    after = rig.read()
    assert after["state"]["limits"] == before["state"]["limits"]
    assert after["diagnostics"]["flashWrites"] == before["diagnostics"]["flashWrites"]


def test_limit_error_shapes_match_the_settings(rig):
    reply = rig.request("limit", {"requestId": "h", "limit": {"value": 40, "unit": "a"}})
    assert reply["error"] == {"code": "SETTING_OUT_OF_RANGE",
                              "message": "limit: value outside [0, 32] a",
                              "details": {"errors": [{
                                  "setting": "limit", "code": "SETTING_OUT_OF_RANGE",
                                  "message": "value outside [0, 32] a",
                                  "details": {"value": 40, "min": 0, "max": 32, "unit": "a"}}]}}


def test_a_flood_of_renewals_neither_blinds_the_pilot_nor_writes_flash(rig):
    charging(rig)
    limit(rig, 10)
    writes = rig.read()["diagnostics"]["flashWrites"]
    n = [0]

    def renew():
        n[0] += 1
        rig.request("limit", {"requestId": "r%d" % n[0], "limit": {
            "value": (10, 11)[n[0] % 2], "unit": "a"}, "ttl": 60, "source": "flood"})

    for _ in range(300):  # a renewal every tick (the process rig steps one per request)
        before = rig.bench.t
        renew()
        if rig.bench.t == before:
            rig.step()
    rig.ev(connected=False)
    t0 = rig.bench.t
    while rig.bench.drive:
        assert rig.bench.t - t0 <= 100
        before = rig.bench.t
        renew()
        if rig.bench.t == before:
            rig.step()
    assert rig.read()["diagnostics"]["flashWrites"] == writes


def test_failsafe_setting_rules(make_rig, tmp_path):
    rig = make_rig(state_dir=tmp_path / "f")
    reply = rig.request("settings", {"requestId": "s", "settings": {
        "failsafe_charge_rate": {"value": 2.3, "unit": "kw"},
        "max_charge_rate": {"value": 60, "unit": "kw"}}})
    assert reply["meta"]["status"] == 422  # all or nothing
    assert rig.read()["settings"]["failsafe_charge_rate"]["value"] == 0
    reply = rig.request("settings", {"requestId": "s", "settings": {
        "failsafe_charge_rate": {"value": 2.3, "unit": "kW"},
        "max_charge_rate": {"value": 7.4, "unit": "kw"}}})
    assert reply["meta"]["status"] == 200
    assert sorted(reply["data"]["updated"]) == ["failsafe_charge_rate", "max_charge_rate"]
    rig.power_cut()
    rig.boot()
    s = rig.read()["settings"]
    assert s["failsafe_charge_rate"] == {"value": 2.3, "unit": "kw", "min": 0, "max": 50}
    assert s["max_charge_rate"]["value"] == 7.4


def test_an_uplink_owned_limit_without_expiry_and_availability(tmp_path):
    # The API an uplink that evaluates its own schedules uses (OCPP): no time-to-live, and
    # out of service as a 0 A ceiling.
    from tools.bench.rig import InProcessRig
    rig = InProcessRig(str(tmp_path))
    plug(rig, 3000)
    lim = rig.agent.limits
    status, body = lim.set_dynamic(10, "a", None, "ocpp", rig.bench.t)
    assert status == 200 and body["expiresAt"] is None
    rig.run(3600 * 1000)  # an hour: still in force
    s = state(rig)
    assert s["limitedBy"] == "dynamic_limit" and s["limits"]["dynamic"]["source"] == "ocpp"
    lim.set_available(False)
    rig.run(7000)
    s = state(rig)
    assert s["limitedBy"] == "unavailable" and s["status"] == "suspended" and rig.bench.x1
    lim.set_available(True)
    rig.run(5100)
    assert duty(rig) == 16.66
    with pytest.raises(ValueError):
        lim.set_dynamic(40, "a", None, "ocpp", rig.bench.t)


def test_the_read_agrees_with_a_setting_written_a_moment_ago(rig):
    # The report that follows a write names the new ceiling at once, not a tick later
    # (Home Assistant showed max_current beside a 3.68 kW cap for one report).
    plug(rig, 3000)
    rig.settings(max_charge_rate=3.68)
    s = state(rig)
    assert s["limitedBy"] == "max_charge_rate" and s["limits"]["effectiveCurrent"] == 16.0
