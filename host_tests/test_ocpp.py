"""OCPP 1.6J end to end (ocpp.md's proof): the simulated charger under micropython, started
by make sim's launcher, against a central system built on PyPI `ocpp` (csms.py). Every
assertion is about what the CSMS saw or what the bench measured on the wires."""
import datetime
import json
import time

import pytest
from ocpp.v16 import call

from tools.bench.csms import Csms, wait
from conftest import duty
from e2e import Charger, InProcessSim, launch, stop
from ota_releases import Releases

# module_broker: the bench's own controls (plug, power) travel over MQTT, whatever the agent
# speaks.
pytestmark = pytest.mark.brokers("amqtt")

TAG = "TAG-1"


@pytest.fixture
def csms():
    c = Csms().start()
    yield c
    c.close()


class Sim:
    """The launcher's simulated charger on `csms`, seen through the bench."""

    def __init__(self, broker, csms, tmp_path, *args, clock=None, config=None):
        self.broker = broker
        self.sim = InProcessSim(["--broker", broker.address, "--state-dir",
                                 str(tmp_path / "flash"), "--device-id", "cp-1",
                                 "--ocpp", csms.url, *args], unix_base_ms=clock,
                                config=config)

    @property
    def bench(self):
        return self.sim.bench

    def ev(self, **fields):
        with self.sim.sim.lock:
            self.bench.set_ev(fields)

    def power(self, on):
        with self.sim.sim.lock:
            if on:
                self.sim.sim._power_on()
            else:
                self.sim.sim._power_off()
        t = self.bench.t
        wait(lambda: self.bench.t >= t + 50, 5)  # the bench has seen it (the contactor drops)

    def duty(self):
        return duty(self)

    def board_unix_s(self):
        return (self.sim.sim.unix_base_ms + self.bench.t) / 1000

    def close(self):
        self.sim.close()


@pytest.fixture
def make_sim(module_broker, csms, tmp_path, mpy_dir):
    made = []

    def make(*args, **kw):
        s = Sim(module_broker, csms, tmp_path, *args, **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def booted(csms, n=1):
    csms.wait(lambda: len(csms.statuses(1)) >= 1 and len(csms.actions("BootNotification")) >= n,
              30)


def charging(sim, csms):
    sim.ev(connected=True, request=True)
    csms.wait(lambda: "Charging" in csms.statuses(), 15)
    wait(lambda: sim.bench.contactor and sim.bench.current > 1, 10)


def tx_id(csms, k=0):
    return 101 + k


def set_profile(csms, connector, pid, stack, purpose, periods, unit="A", kind="Absolute",
                **extra):
    schedule = {"chargingRateUnit": unit, "chargingSchedulePeriod": [
        {"startPeriod": s, "limit": limit} for s, limit in periods]}
    for key in ("duration", "startSchedule"):
        if key in extra:
            schedule[key] = extra.pop(key)
    profile = {"chargingProfileId": pid, "stackLevel": stack,
               "chargingProfilePurpose": purpose, "chargingProfileKind": kind,
               "chargingSchedule": schedule}
    profile.update(extra)
    return csms.call(call.SetChargingProfile(connector_id=connector,
                                             cs_charging_profiles=profile)).status


def test_boot_statuses_session_and_meter_values(make_sim, csms):
    sim = make_sim("--id-tag", TAG)
    booted(csms)
    boot = csms.actions("BootNotification")[0]
    assert boot["chargePointVendor"] and boot["chargePointModel"] == "bench-sim"
    assert boot["firmwareVersion"] and csms.connections == ["cp-1"]
    assert csms.paths == ["/ocpp/cp-1"]  # the charge point id appended to ocpp.url
    assert csms.call(call.ChangeConfiguration(key="MeterValueSampleInterval",
                                              value="2")).status == "Accepted"
    charging(sim, csms)
    time.sleep(5)  # two meter values or more
    sim.ev(connected=False)
    csms.wait(lambda: csms.actions("StopTransaction") and csms.statuses()[-1] == "Available", 10)
    log = [(a, p.get("status") or p.get("reason")) for a, p in csms.log
           if a in ("StatusNotification", "StartTransaction", "StopTransaction") and
           p.get("connectorId", 1) == 1]
    assert log == [("StatusNotification", "Available"), ("StatusNotification", "Preparing"),
                   ("StartTransaction", None), ("StatusNotification", "Charging"),
                   ("StopTransaction", "EVDisconnected"), ("StatusNotification", "Available")]
    start = csms.actions("StartTransaction")[0]
    stop_ = csms.actions("StopTransaction")[0]
    assert start["idTag"] == TAG and start["connectorId"] == 1
    assert stop_["transactionId"] == 101 and stop_["meterStop"] > start["meterStart"]
    mvs = csms.actions("MeterValues")
    assert len(mvs) >= 2 and all(m["transactionId"] == 101 for m in mvs)
    sampled = {v["measurand"]: v for v in mvs[-1]["meterValue"][0]["sampledValue"]}
    assert set(sampled) == {"Energy.Active.Import.Register", "Power.Active.Import",
                            "Current.Import", "Current.Offered"}
    offered = sampled["Current.Offered"]
    assert offered["value"] == "32.0" and offered["unit"] == "A"
    assert float(sampled["Current.Import"]["value"]) == pytest.approx(32.0, abs=0.2)
    assert int(sampled["Power.Active.Import"]["value"]) == pytest.approx(7360, abs=50)
    energy = [int(m["meterValue"][0]["sampledValue"][0]["value"]) for m in mvs]
    assert energy == sorted(energy) and start["meterStart"] <= energy[0] <= stop_["meterStop"]
    stamps = [p["meterValue"][0]["timestamp"] if a == "MeterValues" else p["timestamp"]
              for a, p in csms.log if a not in ("BootNotification", "Heartbeat")]
    assert all(stamps) and stamps == sorted(stamps)  # the board's clock, in order


def test_a_pending_boot_sends_nothing_else_until_accepted(make_sim, csms):
    csms.boot_status = "Pending"
    csms.interval = 2
    sim = make_sim("--id-tag", TAG)
    csms.wait(lambda: len(csms.actions("BootNotification")) >= 2, 15)  # retried after interval
    assert {a for a, _ in csms.log} == {"BootNotification"}
    # While Pending the CSMS may configure the charge point: it answers.
    conf = csms.call(call.GetConfiguration(key=["HeartbeatInterval"]))
    assert conf.configuration_key[0]["key"] == "HeartbeatInterval"
    sim.ev(connected=True, request=True)
    time.sleep(2)
    assert {a for a, _ in csms.log} == {"BootNotification"}  # no StartTransaction yet
    csms.boot_status = "Accepted"
    csms.wait(lambda: csms.actions("StartTransaction"), 15)
    assert csms.actions("StartTransaction")[0]["idTag"] == TAG


def test_a_pending_boot_refuses_remote_start_and_stop(make_sim, csms):
    # OCPP 1.6 section 4.2: while Pending, RemoteStart/StopTransaction are not allowed; no
    # energy may flow on a remote start before the CSMS accepts the charge point.
    csms.boot_status = "Pending"
    csms.interval = 2
    sim = make_sim()  # no id tag: only a remote start starts a transaction
    csms.wait(lambda: csms.actions("BootNotification"), 15)
    sim.ev(connected=True, request=True)
    assert csms.call(call.RemoteStartTransaction(id_tag="R", connector_id=1)).status == \
        "Rejected"
    assert csms.call(call.RemoteStopTransaction(transaction_id=1)).status == "Rejected"
    time.sleep(3)
    assert sim.duty() == 100.0 and not sim.bench.contactor  # nothing offered
    assert {a for a, _ in csms.log} == {"BootNotification"}
    csms.boot_status = "Accepted"
    csms.wait(lambda: csms.statuses()[-1:] == ["Preparing"], 15)
    assert csms.call(call.RemoteStartTransaction(id_tag="R", connector_id=1)).status == \
        "Accepted"
    charging(sim, csms)
    assert csms.actions("StartTransaction")[0]["idTag"] == "R"


def test_a_rejected_boot_answers_nothing_and_says_nothing_until_the_interval(make_sim, csms):
    # OCPP 1.6 section 4.2: while Rejected the charge point answers no CALL of the CSMS and
    # sends nothing until the interval has passed, a new connection included.
    csms.boot_status = "Rejected"
    csms.interval = 6
    sim = make_sim()
    t0 = csms.wait(lambda: csms.actions("BootNotification") and time.monotonic(), 15)
    time.sleep(0.5)  # the answer (logged: its CALL) on its way: Rejected from its arrival
    csms.send_raw('[2, "r-1", "RemoteStartTransaction", {"idTag": "R"}]', "r-1")
    csms.send_raw('[2, "r-2", "GetConfiguration", {}]', "r-2")
    csms.send_raw('[2, "r-3", "TriggerMessage", {"requestedMessage": "Heartbeat"}]', "r-3")
    csms.send_raw('[2, "r-4", "Reset", {"type": 5}]', "r-4")  # not even a CALLERROR
    sim.ev(connected=True, request=True)
    time.sleep(1)
    csms.stop()  # the link drops and comes back within the interval
    csms.start()
    t1 = csms.wait(lambda: len(csms.actions("BootNotification")) == 2 and time.monotonic(), 15)
    assert t1 - t0 >= 5.5, t1 - t0
    assert not csms.raw_answers and {a for a, _ in csms.log} == {"BootNotification"}
    assert sim.duty() == 100.0  # the remote start was not taken either
    csms.boot_status = "Accepted"
    csms.wait(lambda: csms.statuses()[-1:] == ["Preparing"], 15)
    assert not csms.raw_answers and not csms.actions("StartTransaction")
    assert csms.call(call.GetConfiguration(key=["NumberOfConnectors"])).configuration_key


def test_charge_point_max_profile_is_max_charge_rate(make_sim, csms, module_broker):
    sim = make_sim("--id-tag", TAG, "--uplink", "both")
    booted(csms)
    mqtt = Charger(module_broker.address, "cp-1")
    try:
        charging(sim, csms)
        assert sim.duty() == 53.33  # 32 A
        assert set_profile(csms, 0, 1, 0, "ChargePointMaxProfile", [(0, 3680)], unit="W") == \
            "Accepted"
        wait(lambda: sim.duty() == 26.66, 3)  # 16 A on the pilot
        read = mqtt.read()
        assert read["settings"]["max_charge_rate"]["value"] == 3.68
        assert read["state"]["limitedBy"] == "max_charge_rate"
        # In A: 10 A at 230 V is 2.3 kW, and it replaces the first (same stack level).
        assert set_profile(csms, 0, 2, 0, "ChargePointMaxProfile", [(0, 10)]) == "Accepted"
        wait(lambda: sim.duty() == 16.66, 3)
        assert mqtt.read()["settings"]["max_charge_rate"]["value"] == 2.3
        # Above 50 kW: refused, nothing changes. On connector 1: refused.
        assert set_profile(csms, 0, 3, 1, "ChargePointMaxProfile", [(0, 60000)], unit="W") == \
            "Rejected"
        assert set_profile(csms, 1, 3, 1, "ChargePointMaxProfile", [(0, 8)]) == "Rejected"
        # 7.3 A never rounds up: 1679 W, 7.3 A on the pilot at the most.
        assert set_profile(csms, 0, 2, 0, "ChargePointMaxProfile", [(0, 7.3)]) == "Accepted"
        wait(lambda: sim.duty() == 12.16, 3)
        assert mqtt.read()["settings"]["max_charge_rate"]["value"] == 1.679
        # It survives a power cut, as max_charge_rate does.
        sim.power(False)
        sim.power(True)
        booted(csms, 2)
        wait(lambda: sim.bench.contactor and sim.duty() == 12.16, 15)
        assert csms.call(call.ClearChargingProfile(id=2)).status == "Accepted"
        wait(lambda: sim.duty() == 53.33, 8)  # back to the installation's default (50 kW)
        assert csms.call(call.ClearChargingProfile(id=2)).status == "Unknown"
    finally:
        mqtt.close()


def test_a_zero_amp_default_profile_pauses_and_a_later_one_resumes(make_sim, csms):
    sim = make_sim("--id-tag", TAG)
    booted(csms)
    charging(sim, csms)
    assert set_profile(csms, 1, 10, 0, "TxDefaultProfile", [(0, 0)]) == "Accepted"
    csms.wait(lambda: csms.statuses()[-1] == "SuspendedEVSE", 5)
    wait(lambda: not sim.bench.contactor and sim.duty() == 100.0, 8)  # x1, contactor open
    comp = csms.call(call.GetCompositeSchedule(connector_id=1, duration=600))
    assert comp.status == "Accepted"
    assert comp.charging_schedule["charging_schedule_period"] == [{"start_period": 0,
                                                                    "limit": 0.0}]
    time.sleep(3)
    assert not csms.actions("StopTransaction")  # the transaction is kept
    assert set_profile(csms, 1, 10, 0, "TxDefaultProfile", [(0, 16)]) == "Accepted"
    csms.wait(lambda: csms.statuses()[-1] == "Charging", 15)
    wait(lambda: sim.duty() == 26.66 and sim.bench.contactor, 10)
    assert not csms.actions("StopTransaction")
    comp = csms.call(call.GetCompositeSchedule(connector_id=1, duration=600,
                                               charging_rate_unit="W"))
    period = comp.charging_schedule["charging_schedule_period"]
    assert comp.charging_schedule["charging_rate_unit"] == "W" and period == [
        {"start_period": 0, "limit": 3680}]
    # A TxProfile for this transaction overrules the default; stack levels: highest wins.
    assert set_profile(csms, 1, 20, 1, "TxProfile", [(0, 10)], transactionId=101) == "Accepted"
    assert set_profile(csms, 1, 21, 2, "TxProfile", [(0, 12)]) == "Accepted"
    wait(lambda: sim.duty() == 20.0, 3)  # 12 A
    assert set_profile(csms, 1, 22, 0, "TxProfile", [(0, 8)], transactionId=999) == "Rejected"
    assert csms.call(call.ClearChargingProfile(charging_profile_purpose="TxProfile")).status == \
        "Accepted"
    wait(lambda: sim.duty() == 26.66, 8)  # the default again (a raise: paced to 5 s)


def test_a_daily_tariff_window_switches_on_time_with_the_csms_offline(make_sim, csms, tmp_path):
    # The board's clock starts 40 s before 07:00 UTC; the profile switches 16 A -> 8 A at
    # 07:00 every day. The CSMS goes away before that, and the charger restarts in between.
    day = datetime.datetime(2026, 11, 24, tzinfo=datetime.timezone.utc)
    boundary = day + datetime.timedelta(hours=7)
    sim = make_sim("--id-tag", TAG, clock=int((boundary.timestamp() - 40) * 1000))
    booted(csms)
    charging(sim, csms)
    assert set_profile(csms, 1, 5, 0, "TxDefaultProfile", [(0, 16), (7 * 3600, 8)],
                       kind="Recurring", recurrencyKind="Daily",
                       startSchedule=day.isoformat().replace("+00:00", "Z")) == "Accepted"
    wait(lambda: sim.duty() == 26.66, 8)
    comp = csms.call(call.GetCompositeSchedule(connector_id=1, duration=3600))
    periods = comp.charging_schedule["charging_schedule_period"]
    assert [p["limit"] for p in periods] == [16.0, 8.0]
    assert 20 <= periods[1]["start_period"] <= 40
    sim.power(False)
    sim.power(True)  # the profile is in flash
    booted(csms, 2)
    wait(lambda: sim.bench.contactor and sim.duty() == 26.66, 15)
    csms.stop()  # offline from here
    t = wait(lambda: sim.duty() == 13.33 and sim.board_unix_s(), 45)
    # On time: a lower limit applies at once (the worker's 100 ms and a tick or two).
    assert boundary.timestamp() <= t <= boundary.timestamp() + 0.3


def test_remote_start_and_stop(make_sim, csms):
    sim = make_sim()  # no id tag: only RemoteStartTransaction starts a transaction
    booted(csms)
    sim.ev(connected=True, request=True)
    csms.wait(lambda: csms.statuses()[-1] == "Preparing", 10)
    time.sleep(2)
    assert not csms.actions("StartTransaction") and sim.duty() == 100.0  # nothing offered
    assert csms.call(call.RemoteStartTransaction(id_tag="REMOTE-1")).status == "Accepted"
    csms.wait(lambda: csms.actions("StartTransaction"), 5)
    assert csms.actions("StartTransaction")[0]["idTag"] == "REMOTE-1"
    csms.wait(lambda: csms.statuses()[-1] == "Charging", 15)
    assert csms.call(call.RemoteStartTransaction(id_tag="X")).status == "Rejected"  # one at a time
    assert csms.call(call.RemoteStopTransaction(transaction_id=999)).status == "Rejected"
    assert csms.call(call.RemoteStopTransaction(transaction_id=101)).status == "Accepted"
    csms.wait(lambda: csms.actions("StopTransaction"), 5)
    assert csms.actions("StopTransaction")[0]["reason"] == "Remote"
    wait(lambda: not sim.bench.contactor and sim.duty() == 100.0, 8)
    csms.wait(lambda: csms.statuses()[-1] == "Finishing", 5)  # the vehicle stays plugged
    assert sim.bench.vehicle.connected
    sim.ev(connected=False)
    csms.wait(lambda: csms.statuses()[-1] == "Available", 5)
    # A remote start before the vehicle: Preparing, then the transaction at plug-in.
    assert csms.call(call.RemoteStartTransaction(id_tag="REMOTE-2",
                                                 connector_id=1)).status == "Accepted"
    csms.wait(lambda: csms.statuses()[-1] == "Preparing", 5)
    sim.ev(connected=True, request=True)
    csms.wait(lambda: len(csms.actions("StartTransaction")) == 2, 10)
    assert csms.actions("StartTransaction")[1]["idTag"] == "REMOTE-2"
    wait(lambda: sim.bench.contactor, 10)


def test_transactions_queue_through_an_outage_and_a_power_cut(make_sim, csms):
    sim = make_sim("--id-tag", TAG)
    booted(csms)
    assert csms.call(call.ChangeConfiguration(key="MeterValueSampleInterval",
                                              value="1")).status == "Accepted"
    charging(sim, csms)
    csms.wait(lambda: csms.actions("MeterValues"), 5)
    csms.stop()
    sim.ev(connected=False)  # transaction 101 ends offline
    time.sleep(1)
    sim.ev(connected=True, request=True)  # and a new one starts offline (LocalAuthorizeOffline)
    wait(lambda: sim.bench.contactor and sim.bench.current > 1, 10)
    time.sleep(3)
    sim.power(False)  # a power cut under that transaction
    sim.power(True)  # the vehicle is still there: a third transaction
    wait(lambda: sim.bench.contactor and sim.bench.current > 1, 15)
    time.sleep(1)
    sim.ev(connected=False)
    time.sleep(1)
    csms.start()
    csms.wait(lambda: len(csms.actions("StopTransaction")) == 3, 30)
    csms.wait(lambda: csms.statuses()[-1] == "Available", 10)
    tx = [(a, p.get("transactionId"), p.get("reason")) for a, p in csms.log
          if a in ("StartTransaction", "StopTransaction")]
    assert tx == [("StartTransaction", None, None), ("StopTransaction", 101, "EVDisconnected"),
                  ("StartTransaction", None, None), ("StopTransaction", 102, "PowerLoss"),
                  ("StartTransaction", None, None), ("StopTransaction", 103, "EVDisconnected")]
    starts = csms.actions("StartTransaction")
    stops = csms.actions("StopTransaction")
    for s, e in zip(starts, stops):
        assert s["timestamp"] < e["timestamp"] and s["meterStart"] <= e["meterStop"]
    assert stops[0]["timestamp"] < starts[1]["timestamp"]  # the order things happened in
    # The meter values of an offline transaction come after its start, in order, with its
    # CSMS id; those of the one the power cut ended were in RAM only (docs/ocpp.md).
    mv = [m for m in csms.actions("MeterValues") if m.get("transactionId") == 103]
    stamps = [m["meterValue"][0]["timestamp"] for m in mv]
    assert mv and stamps == sorted(stamps) and starts[2]["timestamp"] <= stamps[0]
    assert not [m for m in csms.actions("MeterValues") if m.get("transactionId") == 102]


def after(csms, mark, connector=1):
    """(action, status or reason) of the statuses of `connector` and the transaction
    messages the CSMS has had since log entry `mark`."""
    return [(a, p.get("status") or p.get("reason")) for a, p in csms.log[mark:]
            if a in ("StatusNotification", "StartTransaction", "StopTransaction") and
            p.get("connectorId", connector) == connector]


def test_a_power_cut_under_a_remote_start_leaves_the_vehicle_finishing(make_sim, csms):
    # The vehicle stays plugged through the cut: its transaction ended (PowerLoss), so the
    # connector is Finishing, never Available, and the next transaction is the CSMS's to
    # start (docs/ocpp.md: after a power cut).
    sim = make_sim()  # no id tag
    booted(csms)
    sim.ev(connected=True, request=True)
    csms.wait(lambda: csms.statuses()[-1] == "Preparing", 10)
    assert csms.call(call.RemoteStartTransaction(id_tag="R", connector_id=1)).status == \
        "Accepted"
    charging(sim, csms)
    mark = len(csms.log)
    sim.power(False)
    sim.power(True)
    booted(csms, 2)
    csms.wait(lambda: csms.actions("StopTransaction") and csms.statuses()[-1] == "Finishing", 10)
    time.sleep(3)
    assert after(csms, mark) == [("StopTransaction", "PowerLoss"),
                                 ("StatusNotification", "Finishing")]
    assert sim.duty() == 100.0 and not sim.bench.contactor
    assert csms.call(call.RemoteStartTransaction(id_tag="R2", connector_id=1)).status == \
        "Accepted"
    charging(sim, csms)
    assert csms.actions("StartTransaction")[-1]["idTag"] == "R2"
    sim.ev(connected=False)
    csms.wait(lambda: csms.statuses()[-1] == "Available", 10)


def test_a_power_cut_with_plug_and_charge_resumes_in_a_new_transaction(make_sim, csms):
    sim = make_sim("--id-tag", TAG)
    booted(csms)
    charging(sim, csms)
    mark = len(csms.log)
    sim.power(False)
    sim.power(True)
    booted(csms, 2)
    csms.wait(lambda: len(csms.actions("StartTransaction")) == 2 and
              csms.statuses()[-1] == "Charging", 20)
    log = after(csms, mark)
    assert ("StatusNotification", "Available") not in log, log  # the vehicle never left
    assert log.index(("StopTransaction", "PowerLoss")) < log.index(("StartTransaction", None))
    assert [p["idTag"] for p in csms.actions("StartTransaction")] == [TAG, TAG]
    wait(lambda: sim.bench.contactor and sim.bench.current > 1, 10)


def test_a_silent_csms_is_dropped_and_redialled_and_never_delays_the_contactor(make_sim, csms):
    csms.interval = 1  # heartbeats every second
    sim = make_sim("--id-tag", TAG, config={"ocpp": {"timeout": 2}})
    booted(csms)
    csms.answer = False  # reads nothing, answers nothing (the TCP link stays up)
    latencies = []
    for _ in range(4):
        sim.ev(connected=True, request=True)
        wait(lambda: sim.bench.contactor and sim.bench.current > 1, 10)
        t0 = sim.bench.t
        sim.ev(connected=False)
        wait(lambda: not sim.bench.contactor, 5)
        latencies.append(sim.bench.contactor_log[-1][0] - t0)
    assert max(latencies) <= 100, latencies
    wait(lambda: len(csms.connections) >= 2, 20)  # no answer within 2 s: dialled again
    csms.answer = True
    csms.wait(lambda: len(csms.actions("StopTransaction")) == 4, 30)  # nothing was lost


def test_security_profile_1_basic_auth(module_broker, tmp_path, mpy_dir):
    c = Csms(password="s3cret-Pa55").start()
    try:
        bad = Sim(module_broker, c, tmp_path, "--ocpp-password", "wrong")
        time.sleep(3)
        assert not c.log and not c.connections  # refused at the handshake (HTTP 401)
        bad.close()
        good = Sim(module_broker, c, tmp_path, "--ocpp-password", "s3cret-Pa55")
        try:
            booted(c)
            assert c.connections == ["cp-1"]
        finally:
            good.close()
    finally:
        c.close()


def test_make_sim_connects_to_a_csms(module_broker, csms, tmp_path, mpy_dir):
    proc = launch(module_broker, tmp_path / "flash", "--device-id", "cp-9", "--ocpp", csms.url,
                  "--id-tag", TAG)
    try:
        booted(csms)
        assert csms.connections == ["cp-9"]
    finally:
        code, out = stop(proc)
    assert code == 0 and "sim: stopped" in out, out


def hostile_frames():
    # (message id or None, frame, the CALLERROR code expected or None: no answer possible)
    profile = {"chargingProfileId": 1, "stackLevel": 99, "chargingProfilePurpose":
               "TxDefaultProfile", "chargingProfileKind": "Absolute", "chargingSchedule": {
                   "chargingRateUnit": "A", "chargingSchedulePeriod": [
                       {"startPeriod": 0, "limit": 6}]}}
    return [
        (None, "not json at all", None),
        (None, '[2, 5, "Reset", {"type": "Hard"}]', None),
        (None, '[3, "nobody-asked", {}]', None),
        (None, "[" * 2000, None),
        ("h-1", '[2, "h-1", "Reset", {"type": 5}]', "TypeConstraintViolation"),
        ("h-2", '[2, "h-2", "FlyToTheMoon", {}]', "NotImplemented"),
        ("h-3", '[2, "h-3", "UpdateFirmware", {"location": "ftp://x", '
                '"retrieveDate": "2026-11-24T00:00:00Z"}]', "PropertyConstraintViolation"),
        ("h-4", '[2, "h-4", "SetChargingProfile", []]', "FormationViolation"),
        ("h-5", '[2, "h-5", "SetChargingProfile", {"connectorId": 1}]', "FormationViolation"),
        ("h-6", '[2, "h-6", "DataTransfer", {"vendorId": "x", "data": "%s"}]' % ("x" * 100000),
         "FormationViolation"),
        ("h-7", json.dumps([2, "h-7", "ChangeConfiguration", {"key": "\ud800x", "value": "1"}]),
         "PropertyConstraintViolation"),
        ("h-8", '[2, "h-8", "Reset", {"type": ', "FormationViolation"),
        ("h-9", json.dumps([2, "h-9", "SetChargingProfile", {"connectorId": 1,
                                                              "csChargingProfiles": profile}]),
         "PropertyConstraintViolation"),
        ("h-10", '[2, "h-10", "GetCompositeSchedule", {"connectorId": 1, "duration": 1e999}]',
         "TypeConstraintViolation"),
        ("h-11", '[2, "h-11", "RemoteStopTransaction", {"transactionId": "101"}]',
         "TypeConstraintViolation"),
        ("h-12", '[2, "h-12", "Reset"]', "FormationViolation"),
    ]


def test_hostile_frames_and_a_flood_never_reach_the_pilot(make_sim, csms):
    sim = make_sim("--id-tag", TAG)
    booted(csms)
    charging(sim, csms)
    mark = len(sim.bench.duty_log)
    for uid, frame, _ in hostile_frames():
        csms.send_raw(frame, uid)
    for i in range(300):  # a flood: every CALL answered, in order
        csms.send_raw('[2, "f-%d", "GetConfiguration", {"key": ["HeartbeatInterval"]}]' % i,
                      "f-%d" % i)
    for i in range(40):  # and a flood of changes that would each write flash
        csms.send_raw(json.dumps([2, "p-%d" % i, "SetChargingProfile", {
            "connectorId": 1, "csChargingProfiles": {
                "chargingProfileId": 50 + i, "stackLevel": 3,
                "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
                "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": 32}]}}}]), "p-%d" % i)
    csms.wait(lambda: len(csms.raw_answers) >= 12 + 300 + 40, 30)
    for uid, _, code in hostile_frames():
        if uid:
            answer = csms.raw_answers[uid]
            assert answer[0] == 4 and answer[2] == code, (uid, answer)
    assert all(csms.raw_answers["f-%d" % i][2]["configurationKey"][0]["value"] == "300"
               for i in range(300))
    statuses = [csms.raw_answers["p-%d" % i][2]["status"] for i in range(40)]
    assert statuses[:10] == ["Accepted"] * 10 and statuses.count("Accepted") <= 12  # flash budget
    assert csms.connections == ["cp-1"]  # one connection all along
    assert sim.sim.sim.agent.proc.poll() is None
    assert sim.bench.duty_log[mark:] == [] and sim.bench.contactor  # the pilot never moved
    assert csms.call(call.GetConfiguration(key=["NumberOfConnectors"])).configuration_key[0][
        "value"] == "1"


def test_configuration_keys(make_sim, csms):
    sim = make_sim("--id-tag", TAG)
    booted(csms)
    conf = csms.call(call.GetConfiguration())
    keys = {k["key"]: k for k in conf.configuration_key}
    for key in ("HeartbeatInterval", "MeterValueSampleInterval", "MeterValuesSampledData",
                "ClockAlignedDataInterval", "ConnectionTimeOut", "AuthorizeRemoteTxRequests",
                "LocalAuthorizeOffline"):
        assert keys[key]["readonly"] is False, key
    for key, value in (("ChargeProfileMaxStackLevel", "8"), ("ChargingScheduleMaxPeriods", "24"),
                       ("ChargingScheduleAllowedChargingRateUnit", "Current,Power"),
                       ("NumberOfConnectors", "1")):
        assert keys[key]["readonly"] is True and keys[key]["value"] == value, key
    some = csms.call(call.GetConfiguration(key=["HeartbeatInterval", "Colour"]))
    assert [k["key"] for k in some.configuration_key] == ["HeartbeatInterval"]
    assert some.unknown_key == ["Colour"]
    change = lambda k, v: csms.call(call.ChangeConfiguration(key=k, value=v)).status  # noqa: E731
    assert change("NumberOfConnectors", "2") == "Rejected"  # read-only
    assert change("Colour", "blue") == "NotSupported"
    assert change("HeartbeatInterval", "soon") == "Rejected"
    assert change("MeterValuesSampledData", "Energy.Active.Import.Register,Voltage") == "Rejected"
    assert change("MeterValuesSampledData", "Energy.Active.Import.Register") == "Accepted"
    assert change("MeterValueSampleInterval", "1") == "Accepted"
    sim.power(False)
    sim.power(True)  # persisted
    booted(csms, 2)
    some = csms.call(call.GetConfiguration(key=["MeterValuesSampledData",
                                                "MeterValueSampleInterval"]))
    assert [k["value"] for k in some.configuration_key] == ["Energy.Active.Import.Register", "1"]
    charging(sim, csms)
    csms.wait(lambda: csms.actions("MeterValues"), 5)
    values = csms.actions("MeterValues")[0]["meterValue"][0]["sampledValue"]
    assert [v["measurand"] for v in values] == ["Energy.Active.Import.Register"]


def test_a_remote_start_with_another_purpose_is_rejected_and_keys_match_any_case(make_sim, csms):
    make_sim()
    booted(csms)
    # OCTT TC_060_CS as EVerest's test sets send it: a TxDefaultProfile with a transactionId.
    profile = {"chargingProfileId": 3, "transactionId": 1, "stackLevel": 0,
               "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
               "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
                   {"startPeriod": 0, "limit": 6}]}}
    answer = csms.call(call.RemoteStartTransaction(id_tag="R", connector_id=1,
                                                   charging_profile=profile))
    assert answer is not None and answer.status == "Rejected"  # None: a CALLERROR
    # Keys are CiString50, compared whatever the case; answers use the charger's spelling.
    conf = csms.call(call.GetConfiguration(key=["ConnectionTimeout"]))
    assert [k["key"] for k in conf.configuration_key] == ["ConnectionTimeOut"]
    assert not conf.unknown_key
    assert csms.call(call.ChangeConfiguration(key="connectiontimeout", value="30")).status == \
        "Accepted"
    conf = csms.call(call.GetConfiguration(key=["CONNECTIONTIMEOUT"]))
    assert [(k["key"], k["value"]) for k in conf.configuration_key] == [("ConnectionTimeOut",
                                                                         "30")]


def test_change_availability(make_sim, csms):
    sim = make_sim("--id-tag", TAG)
    booted(csms)
    assert csms.call(call.ChangeAvailability(connector_id=0, type="Inoperative")).status == \
        "Accepted"
    csms.wait(lambda: csms.statuses(0)[-1:] == ["Unavailable"] and
              csms.statuses(1)[-1:] == ["Unavailable"], 5)
    sim.ev(connected=True, request=True)
    time.sleep(3)
    assert not csms.actions("StartTransaction") and sim.duty() == 100.0  # out of service
    assert csms.call(call.ChangeAvailability(connector_id=1, type="Operative")).status == \
        "Accepted"
    csms.wait(lambda: csms.statuses()[-1] == "Charging", 15)
    # During a transaction: Scheduled, applied when it ends; it survives a power cut.
    assert csms.call(call.ChangeAvailability(connector_id=0, type="Inoperative")).status == \
        "Scheduled"
    time.sleep(2)
    assert sim.bench.contactor and csms.statuses()[-1] == "Charging"
    sim.ev(connected=False)
    csms.wait(lambda: csms.actions("StopTransaction") and csms.statuses()[-1] == "Unavailable", 5)
    sim.power(False)
    sim.power(True)
    booted(csms, 2)
    csms.wait(lambda: csms.statuses()[-1] == "Unavailable", 10)
    assert csms.call(call.ChangeAvailability(connector_id=2, type="Operative")).status == \
        "Rejected"


def test_reset_ends_the_transaction_and_restarts(make_sim, csms):
    sim = make_sim("--id-tag", TAG)
    booted(csms)
    charging(sim, csms)
    assert csms.call(call.Reset(type="Soft")).status == "Accepted"
    csms.wait(lambda: csms.actions("StopTransaction"), 10)
    assert csms.actions("StopTransaction")[0]["reason"] == "SoftReset"
    csms.wait(lambda: len(csms.actions("BootNotification")) == 2, 30)  # restarted
    assert not sim.bench.contactor
    # The vehicle is still there; its transaction ended: Finishing, no new one.
    csms.wait(lambda: csms.statuses()[-1] == "Finishing", 10)
    time.sleep(2)
    assert len(csms.actions("StartTransaction")) == 1
    sim.ev(connected=False)
    csms.wait(lambda: csms.statuses()[-1] == "Available", 10)
    assert csms.call(call.Reset(type="Hard")).status == "Accepted"
    csms.wait(lambda: len(csms.actions("BootNotification")) == 3, 30)


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    return Releases(tmp_path_factory.mktemp("releases"))


def test_update_firmware_reports_each_stage_and_boots_the_new_version(make_sim, csms,
                                                                     releases):
    # UpdateFirmware's location is the release file (the signed manifest), the file beside
    # it (docs/ota.md, "On the charger"): make sim serves them. One that is not as signed
    # fails (DownloadFailed) and changes nothing; a good one goes Downloading, Downloaded,
    # Installing, the charger restarts, and the new version's BootNotification says it and
    # is followed by Installed.
    sim = make_sim("--id-tag", TAG, "--updates", releases.folder,
                   config={"ota": {"keys": releases.keys}})
    booted(csms)
    server = sim.sim.sim.updates

    def stages():
        return [p["status"] for p in csms.actions("FirmwareStatusNotification")]
    for name, want in (("flipped.tar", ["Downloading", "DownloadFailed"]),
                       ("note.tar", ["Downloading", "Downloaded", "Installing", "Installed"])):
        before = len(stages())
        location = server.url(releases.write_release_file(name))
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        csms.call(call.UpdateFirmware(location=location, retrieve_date=now))
        csms.wait(lambda: stages()[before:][-1:] in ([want[-1]],), 40)
        assert stages()[before:] == want, stages()
    boots = csms.actions("BootNotification")
    assert [b["firmwareVersion"] for b in boots] == ["0.2.0", "0.3.0"], boots
    assert server.gets == ["/flipped.tar.ota.json", "/flipped.tar", "/note.tar.ota.json",
                           "/note.tar"]
    # Asked again while the new version is on trial: refused before a byte, and said so.
    before = len(stages())
    location = server.url(releases.write_release_file("note-040.tar"))
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    csms.call(call.UpdateFirmware(location=location, retrieve_date=now))
    csms.wait(lambda: len(stages()) > before, 20)
    assert stages()[before:] == ["DownloadFailed"] and server.gets[-1] == "/note.tar.ota.json"


def test_trigger_message(make_sim, csms):
    sim = make_sim("--id-tag", TAG)
    booted(csms)
    before = len(csms.log)
    for kind in ("Heartbeat", "StatusNotification", "MeterValues", "BootNotification"):
        assert csms.call(call.TriggerMessage(requested_message=kind)).status == "Accepted"
        csms.wait(lambda: any(a == kind for a, _ in csms.log[before:]), 5)
    mv = [p for a, p in csms.log[before:] if a == "MeterValues"][0]
    assert mv["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
    assert csms.call(call.TriggerMessage(requested_message="StatusNotification",
                                         connector_id=7)).status == "Rejected"
    assert csms.call(call.TriggerMessage(
        requested_message="DiagnosticsStatusNotification")).status == "NotImplemented"
    assert csms.call(call.UnlockConnector(connector_id=1)).status == "NotSupported"
    assert csms.call(call.DataTransfer(vendor_id="acme")).status == "UnknownVendorId"
    assert sim.sim.sim.agent.proc.poll() is None


def test_faults_are_notified_with_their_ocpp_error_codes(make_sim, csms):
    sim = make_sim("--id-tag", TAG)
    booted(csms)
    charging(sim, csms)

    def fault(name):
        with sim.sim.sim.lock:
            sim.bench.set_fault(name)

    def last(connector):
        return [p for p in csms.actions("StatusNotification")
                if p["connectorId"] == connector][-1]
    fault("pilot_short")
    csms.wait(lambda: last(1)["status"] == "Faulted", 5)
    assert last(1)["errorCode"] == "OtherError" and last(1)["vendorErrorCode"] == "PILOT_SHORT"
    assert last(0)["status"] == "Faulted"
    fault("none")
    csms.wait(lambda: last(1)["status"] == "SuspendedEVSE", 5)  # the 30 s hold-off
    fault("rcd_trip")
    csms.wait(lambda: last(1)["errorCode"] == "GroundFailure", 5)
    assert last(1)["status"] == "Faulted" and "vendorErrorCode" not in last(1)
    # A latched fault holds the pilot at F until the board restarts: the session (and its
    # transaction) can end only then.
    assert not csms.actions("StopTransaction") and not sim.bench.contactor


def test_security_profile_2_wss_basic_auth_and_a_ca_made_here(module_broker, tmp_path, mpy_dir):
    import ssl
    from pki import Pki
    pki = Pki()
    ca, cert, key = pki.server("ca")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    c = Csms(password="s3cret-Pa55", tls=tls).start()
    try:
        assert c.url.startswith("wss://localhost:")
        # A CSMS whose certificate another CA signed is not talked to.
        rogue = Sim(module_broker, c, tmp_path, "--ocpp-password", "s3cret-Pa55",
                    "--ocpp-ca", pki.path("rogue.der"), "--device-id", "cp-1")
        time.sleep(4)
        assert not c.connections
        rogue.close()
        good = Sim(module_broker, c, tmp_path / "good", "--ocpp-password", "s3cret-Pa55",
                   "--ocpp-ca", pki.path("ca.pem"), "--id-tag", TAG)  # PEM or DER
        try:
            booted(c)
            charging(good, c)
            assert c.connections == ["cp-1"] and c.actions("StartTransaction")
        finally:
            good.close()
    finally:
        c.close()
        pki.close()
