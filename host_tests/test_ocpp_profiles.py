"""Charging profiles, checked and evaluated (firmware/ocpp16/ocpp_profiles.py), and what the station
makes of them (the cap, the dynamic limit, GetCompositeSchedule); the station's operations,
configuration and power cuts; in process and fast (CPython). The same code under
micropython is what test_ocpp.py drives end to end."""
import json

import pytest

from conftest import plug
from tools.bench.rig import UNIX_BASE_MS, InProcessRig

import ocpp_ops
import ocpp_profiles as pf
import persist
from ocpp_config import Config
from ocpp_profiles import Invalid
from ocpp_station import Station

DAY = UNIX_BASE_MS // 1000  # 2026-11-24T00:00:00Z: the rig's clock at bench time 0


def profile(pid=1, stack=0, purpose="TxDefaultProfile", kind="Absolute", periods=((0, 16),),
            unit="A", **extra):
    schedule = {"chargingRateUnit": unit, "chargingSchedulePeriod": [
        {"startPeriod": s, "limit": v} for s, v in periods]}
    for key in ("duration", "startSchedule", "minChargingRate"):
        if key in extra:
            schedule[key] = extra.pop(key)
    p = {"chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
         "chargingProfileKind": kind, "chargingSchedule": schedule}
    p.update(extra)
    return p


def iso(unix_s):
    import isotime
    return isotime.iso(unix_s * 1000)


def amps(tenths, watts):
    return tenths // 10 * 100 // 2300 if watts else tenths  # 230 V, 1 phase


@pytest.mark.parametrize("change,code", [
    ({"stackLevel": "0"}, "TypeConstraintViolation"),
    ({"stackLevel": 9}, "PropertyConstraintViolation"),
    ({"chargingProfilePurpose": "Max"}, "PropertyConstraintViolation"),
    ({"chargingProfileKind": "Recurring"}, "PropertyConstraintViolation"),  # no start, no kind
    ({"validFrom": "yesterday"}, "PropertyConstraintViolation"),
    ({"transactionId": 5}, "PropertyConstraintViolation"),  # only in a TxProfile
    ({"chargingSchedule": {"chargingRateUnit": "A"}}, "FormationViolation"),
    ({"chargingSchedule": {"chargingRateUnit": "kW", "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": 1}]}}, "PropertyConstraintViolation"),
    ({"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": True}]}}, "TypeConstraintViolation"),
    ({"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": 1e999}]}}, "TypeConstraintViolation"),
    ({"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": 60, "limit": 6}]}}, "PropertyConstraintViolation"),  # not from 0
    ({"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": 6}, {"startPeriod": 0, "limit": 8}]}},
     "PropertyConstraintViolation"),  # not ascending
    ({"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": i * 60, "limit": 6} for i in range(25)]}},
     "PropertyConstraintViolation"),  # beyond ChargingScheduleMaxPeriods
    ({"chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": -1}]}}, "PropertyConstraintViolation"),
])
def test_malformed_profiles_are_refused_with_the_right_error(change, code):
    p = profile()
    p.update(change)
    with pytest.raises(Invalid) as e:
        pf.parse(p)
    assert e.value.args[0] == code


def evaluate(items, u, r=None, tx=None, purposes=(pf.TX, pf.TX_DEFAULT)):
    ps = pf.Profiles(None)
    ps.items = [pf.parse(p) for p in items]
    for p, raw in zip(ps.items, items):
        if raw["chargingProfilePurpose"] == "TxProfile":
            p.tx = tx
    return ps.evaluate(purposes, u, r, tx, amps)


def test_the_highest_stack_level_in_force_wins():
    low = profile(1, 0, periods=((0, 16),))
    high = profile(2, 5, periods=((0, 8),), validFrom=iso(DAY + 3600), validTo=iso(DAY + 7200))
    assert evaluate([low, high], DAY)[:3] == (160, 16.0, "a")  # high not yet valid
    assert evaluate([low, high], DAY)[3] == 3600  # and re-evaluated when it starts
    assert evaluate([low, high], DAY + 3600)[:2] == (80, 8.0)
    assert evaluate([low, high], DAY + 7200)[:2] == (160, 16.0)  # validTo passed


def test_absolute_schedules_with_periods_and_a_duration():
    p = profile(periods=((0, 32), (600, 10), (1200, 0)), startSchedule=iso(DAY), duration=1800)
    assert evaluate([p], DAY - 1) == (None, None, None, 1)
    assert evaluate([p], DAY + 599) == (320, 32.0, "a", 1)
    assert evaluate([p], DAY + 600)[:2] == (100, 10.0)
    assert evaluate([p], DAY + 1500) == (0, 0.0, "a", 300)  # 0 A: suspended
    assert evaluate([p], DAY + 1800) == (None, None, None, None)  # duration over


def test_relative_schedules_count_from_the_transaction_start():
    p = profile(kind="Relative", periods=((0, 6), (900, 16)), startSchedule=iso(DAY + 99))
    assert evaluate([p], DAY, r=None)[:2] == (60, 6.0)  # no transaction: as at its start
    assert evaluate([p], DAY, r=None)[3] is None
    assert evaluate([p], DAY + 5000, r=899) == (60, 6.0, "a", 1)
    assert evaluate([p], DAY + 5000, r=900)[:2] == (160, 16.0)
    # Absolute without startSchedule is relative to the transaction too (OCPP 1.6 3.13.2).
    q = profile(periods=((0, 6), (900, 16)))
    assert evaluate([q], None, r=950)[:2] == (160, 16.0)


def test_recurring_daily_and_weekly():
    daily = profile(kind="Recurring", recurrencyKind="Daily", startSchedule=iso(DAY),
                    periods=((0, 16), (7 * 3600, 8), (22 * 3600, 32)))
    for day in (0, 1, 30):
        base = DAY + day * 86400
        assert evaluate([daily], base + 6 * 3600)[:2] == (160, 16.0)
        assert evaluate([daily], base + 7 * 3600 - 1)[3] == 1  # on time, to the second
        assert evaluate([daily], base + 7 * 3600)[:2] == (80, 8.0)
        assert evaluate([daily], base + 23 * 3600) == (320, 32.0, "a", 3600)  # wraps at midnight
    weekly = profile(kind="Recurring", recurrencyKind="Weekly", startSchedule=iso(DAY),
                     periods=((0, 10), (86400, 20)), duration=2 * 86400)
    assert evaluate([weekly], DAY + 7 * 86400 + 100)[:2] == (100, 10.0)
    assert evaluate([weekly], DAY + 8 * 86400 + 100)[:2] == (200, 20.0)
    assert evaluate([weekly], DAY + 9 * 86400 + 100)[:3] == (None, None, None)


def test_a_tx_profile_overrules_the_default_for_its_transaction_only():
    default = profile(1, 8, periods=((0, 16),))
    tx = profile(2, 0, purpose="TxProfile", periods=((0, 10),))
    assert evaluate([default, tx], DAY, r=5, tx=7)[:2] == (100, 10.0)
    ps = pf.Profiles(None)
    ps.items = [pf.parse(default), pf.parse(tx)]
    ps.items[1].tx = 7
    assert ps.evaluate((pf.TX, pf.TX_DEFAULT), DAY, 5, 8, amps)[:2] == (160, 16.0)  # another tx


def test_watts_convert_never_up():
    p = profile(unit="W", periods=((0, 3679.9),))
    da, value, unit, _ = evaluate([p], DAY)
    assert (value, unit) == (3.6799, "kw") and da == 159  # 3679 W at 230 V is 15.99 A


def test_without_the_clock_the_lowest_limit_any_profile_might_apply():
    window = profile(1, 1, kind="Recurring", recurrencyKind="Daily", startSchedule=iso(DAY),
                     periods=((0, 16), (7 * 3600, 0)))
    plain = profile(2, 0, kind="Relative", periods=((0, 10),))
    assert evaluate([window, plain], None, r=60) == (0, 0.0, "a", None)
    assert evaluate([plain], None, r=60)[:2] == (100, 10.0)  # needs no clock


# -- the station: what the profiles become, in process

class Uplink:
    def __init__(self, station):
        self.station = station
        self.accepted = True  # the CSMS accepted the BootNotification
        self.reset = None
        self.triggered = []

    def trigger(self, action, connector):
        self.triggered.append((action, connector))


def station(rig, **cfg):
    st = Station(rig.agent, dict(cfg))
    rig.agent.duties.append(st.service)
    return st, Uplink(st)


def call(up, action, payload, rig):
    with up.station.lock:
        return ocpp_ops.handle(up, action, payload, rig.bench.t)


def set_profile(up, rig, connector, p):
    return call(up, "SetChargingProfile", {"connectorId": connector, "csChargingProfiles": p},
                rig)["status"]


@pytest.fixture
def prig(tmp_path):
    (tmp_path / "flash").mkdir()
    rig = InProcessRig(str(tmp_path / "flash"))
    yield rig
    rig.close()


def test_charge_point_max_in_a_and_w_is_the_cap(prig):
    st, up = station(prig, id_tag="T")
    plug(prig, 3000)
    cap = lambda: prig.agent.settings.cap_w  # noqa: E731
    assert set_profile(up, prig, 0, profile(purpose="ChargePointMaxProfile", unit="W",
                                            periods=((0, 11000),))) == "Accepted"
    prig.run(200)
    assert cap() == 11000
    assert set_profile(up, prig, 0, profile(purpose="ChargePointMaxProfile",
                                            periods=((0, 7.35),))) == "Accepted"
    prig.run(200)
    assert cap() == 1679  # 7.35 A is 7.3 A, at 230 V 1679 W: floored, never up
    assert set_profile(up, prig, 0, profile(2, 1, purpose="ChargePointMaxProfile", unit="W",
                                            periods=((0, 50001),))) == "Rejected"
    assert set_profile(up, prig, 0, profile(2, 1, purpose="ChargePointMaxProfile",
                                            periods=((0, 218),))) == "Rejected"  # 50.1 kW
    assert set_profile(up, prig, 1, profile(2, 1, purpose="ChargePointMaxProfile",
                                            periods=((0, 8),))) == "Rejected"  # connector 1
    assert call(up, "ClearChargingProfile", {"chargingProfilePurpose": "ChargePointMaxProfile"},
                prig)["status"] == "Accepted"
    prig.run(200)
    assert cap() == 50000  # the installation's default again
    assert json.loads(prig.agent.persist.read_blob("ocpp_prof")) == []


def test_a_default_profile_is_the_dynamic_limit_and_the_composite_counts_every_source(prig):
    st, up = station(prig, id_tag="T")
    plug(prig, 3000)
    assert prig.read()["state"]["limits"]["dynamic"] is None
    assert set_profile(up, prig, 1, profile(periods=((0, 20), (3600, 6)))) == "Accepted"
    prig.run(200)
    state = prig.read()["state"]
    assert state["limits"]["dynamic"] == {"value": 20.0, "unit": "a", "source": "ocpp",
                                          "expiresAt": None}
    assert state["limitedBy"] == "dynamic_limit"
    prig.settings(max_charge_rate=3.68)  # a lower cap (16 A) from another uplink
    # No startSchedule: the periods count from the transaction's start, a few s ago.
    at = 3600 - (prig.bench.t - st.tx[3]) // 1000
    out = call(up, "GetCompositeSchedule", {"connectorId": 1, "duration": 7200}, prig)
    assert out["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 16.0}, {"startPeriod": at, "limit": 6.0}]
    out = call(up, "GetCompositeSchedule", {"connectorId": 0, "duration": 7200,
                                            "chargingRateUnit": "W"}, prig)
    assert out["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 3680}, {"startPeriod": at, "limit": 1380}]
    assert out["scheduleStart"] == out["chargingSchedule"]["startSchedule"]
    assert call(up, "GetCompositeSchedule", {"connectorId": 2, "duration": 60},
                prig) == {"status": "Rejected"}
    # The profile in force ends: the dynamic limit goes with it.
    assert call(up, "ClearChargingProfile", {}, prig)["status"] == "Accepted"
    prig.run(200)
    assert prig.read()["state"]["limits"]["dynamic"] is None


def test_a_flood_of_changes_is_refused_not_written(prig):
    st, up = station(prig)
    writes = lambda: prig.agent.persist.by_key.get("ocpp_prof", 0)  # noqa: E731
    statuses = [set_profile(up, prig, 1, profile(stack=i % 2, periods=((0, 6 + i % 10),)))
                for i in range(50)]
    assert statuses.count("Accepted") == 10 and writes() == 10
    prig.run(10000)  # one more per 10 s
    assert set_profile(up, prig, 1, profile(periods=((0, 7),))) == "Accepted"
    assert set_profile(up, prig, 1, profile(periods=((0, 8),))) == "Rejected"
    assert writes() == 11


def test_profiles_and_the_queue_survive_a_restart_and_a_corrupt_record_is_reported(prig):
    st, up = station(prig, id_tag="T")
    assert set_profile(up, prig, 1, profile(periods=((0, 10),))) == "Accepted"
    plug(prig, 3000)
    assert st.tx and [e[0] for e in st.queue if e[0] in "SE"] == ["S"]  # no CSMS here
    prig.power_cut()
    prig.boot()
    st2, _ = station(prig, id_tag="T")
    prig.run(3000)
    kinds = [e[0] for e in st2.queue if e[0] in "SE"]
    assert kinds == ["S", "E", "S"]  # the first one stopped by the power cut, then a new one
    assert [e[5] for e in st2.queue if e[0] == "E"] == ["PowerLoss"]
    assert prig.read()["state"]["limits"]["dynamic"]["value"] == 10.0
    prig.power_cut()
    with open(prig.state_dir + "/ocpp_prof", "wb") as f:
        f.write(b"[[garbage")
    prig.boot()
    station(prig)
    prig.pump()
    assert any(e["type"] == "storage.corrupt" and e["data"]["key"] == "ocpp_prof"
               for e in prig.events())


class Store(dict):
    """A board's key-value store in RAM, for the configuration alone."""

    def read(self, key):
        return self.get(key)

    def write(self, key, data):
        self[key] = data


def test_configuration_keeps_what_the_csms_changed_and_not_the_boot_interval():
    store = Store()
    c = Config(persist.Persist(store))
    c.volatile["HeartbeatInterval"] = "42"  # a BootNotification's interval
    assert c.number("HeartbeatInterval") == 42
    assert c.change("MeterValueSampleInterval", "15") == "Accepted"
    assert c.change("AuthorizeRemoteTxRequests", "TRUE") == "Accepted"
    assert c.change("NumberOfConnectors", "2") == "Rejected"
    assert c.change("MeterValueSampleInterval", "-1") == "Rejected"
    assert c.change("MeterValuesSampledData", "") == "Accepted"  # none
    again = Config(persist.Persist(store))
    assert again.load()
    assert again.number("HeartbeatInterval") == 300  # the default: the boot's is not kept
    assert again.number("MeterValueSampleInterval") == 15 and again.flag(
        "AuthorizeRemoteTxRequests") and again.items("MeterValuesSampledData") == []
    assert c.change("HeartbeatInterval", "120") == "Accepted"  # a change beats the boot's
    assert c.number("HeartbeatInterval") == 120


def test_the_offline_queue_is_bounded_and_keeps_whole_sessions_in_order(prig, capsys):
    st, up = station(prig, id_tag="T")
    assert st.config.change("MeterValueSampleInterval", "1") == "Accepted"
    for _ in range(8):  # eight sessions with no CSMS: 16 Start/Stop for 12 places
        plug(prig, 3000)
        prig.ev(connected=False)
        prig.run(500)
    kinds = [(e[0], e[1]) for e in st.queue if e[0] in "SE"]
    assert kinds == [(k, n) for n in range(3, 9) for k in "SE"]  # the two oldest went whole
    assert len([e for e in st.queue if e[0] == "M"]) == 8  # the newest meter values
    assert "ocpp: dropped StartTransaction of transaction 1" in capsys.readouterr().out
    saved = json.loads(prig.agent.persist.read_blob("ocpp_tx"))
    assert [(e[0], e[1]) for e in saved["q"]] == kinds and saved["open"] is None


def test_a_remote_start_with_a_profile_that_is_not_a_tx_profile_is_rejected(prig):
    # OCTT TC_060_CS as EVerest's test sets send it: a TxDefaultProfile with a transactionId.
    # The OCTT takes Rejected or a CALLERROR; docs/ocpp.md promises Rejected.
    st, up = station(prig)
    for purpose in ("TxDefaultProfile", "ChargePointMaxProfile"):
        p = profile(3, purpose=purpose, transactionId=1)
        assert call(up, "RemoteStartTransaction", {"idTag": "T", "connectorId": 1,
                                                   "chargingProfile": p}, prig) == \
            {"status": "Rejected"}
    assert st.remote is None
    with pytest.raises(Invalid) as e:  # a malformed TxProfile is still a CALLERROR
        call(up, "RemoteStartTransaction", {"idTag": "T", "chargingProfile": profile(
            purpose="TxProfile", stack=99)}, prig)
    assert e.value.args[0] == "PropertyConstraintViolation"
    assert call(up, "RemoteStartTransaction", {"idTag": "T", "chargingProfile": profile(
        purpose="TxProfile")}, prig) == {"status": "Accepted"}


def test_configuration_keys_match_whatever_their_case():
    # OCPP 1.6 keys are CiString50: compared case-insensitively; answers name them as the
    # charger spells them.
    c = Config(persist.Persist(Store()))
    known, unknown = c.read(["connectiontimeout", "CONNECTIONTIMEOUT", "Colour"])
    assert [k["key"] for k in known] == ["ConnectionTimeOut", "ConnectionTimeOut"]
    assert unknown == ["Colour"]
    assert c.change("ConnectionTimeout", "30") == "Accepted"
    assert c.number("ConnectionTimeOut") == 30 and c.changed == {"ConnectionTimeOut": "30"}
    assert c.change("numberofconnectors", "2") == "Rejected"  # read-only, whatever the case


def test_while_the_boot_is_not_accepted_remote_start_and_stop_are_rejected(prig):
    # OCPP 1.6 section 4.2: not allowed while Pending; nothing changes, no flash is spent.
    st, up = station(prig)
    plug(prig, 3000)
    up.accepted = False
    budget = st._writes
    assert call(up, "RemoteStartTransaction", {"idTag": "T"}, prig) == {"status": "Rejected"}
    assert call(up, "RemoteStopTransaction", {"transactionId": 1}, prig) == {"status": "Rejected"}
    prig.run(3000)
    assert st.remote is None and st.tx is None and st._writes == budget
    assert prig.bench.current == 0 and not prig.bench.contactor


def connector_statuses(st):
    return [e[4] for e in st.queue if e[0] == "N" and e[1] == 1]


def reboot(prig, **cfg):
    # Power on again; a worker pass right after the control loop's first tick, as the
    # worker's own thread may make on a board, before the pilot reading is steady.
    prig.boot()
    st, up = station(prig, **cfg)
    prig.step()
    st.service(prig.board.now_ms())
    assert connector_statuses(st) == []  # nothing said before the connector is known
    return st, up


def test_after_a_power_cut_with_the_vehicle_plugged_the_connector_is_finishing(prig):
    # Without plug and charge: the cut transaction stops (PowerLoss), the vehicle is still
    # there: Finishing, never Available, and no new transaction until the CSMS starts one.
    st, up = station(prig)
    plug(prig, 3000)
    assert call(up, "RemoteStartTransaction", {"idTag": "R"}, prig) == {"status": "Accepted"}
    prig.run(3000)
    assert st.tx and prig.bench.contactor
    prig.power_cut()
    st, up = reboot(prig)
    prig.run(3000)
    assert connector_statuses(st) == ["Finishing"]
    assert [(e[0], e[1]) for e in st.queue if e[0] in "SE"] == [("S", 1), ("E", 1)]
    assert [e[5] for e in st.queue if e[0] == "E"] == ["PowerLoss"]
    assert st.tx is None and not prig.bench.contactor
    assert call(up, "RemoteStartTransaction", {"idTag": "R2"}, prig) == {"status": "Accepted"}
    prig.run(3000)
    assert st.tx[1] == "R2" and prig.bench.contactor


def test_after_a_power_cut_plug_and_charge_starts_a_new_transaction(prig):
    st, up = station(prig, id_tag="T")
    plug(prig, 3000)
    prig.power_cut()
    st, up = reboot(prig, id_tag="T")
    prig.run(3000)
    assert connector_statuses(st) == ["Preparing", "Charging"]  # no CSMS here: all kept
    assert [(e[0], e[1]) for e in st.queue if e[0] in "SE"] == [("S", 1), ("E", 1), ("S", 2)]
    assert prig.bench.contactor
