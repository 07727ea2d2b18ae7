"""Issue 10's defects, one regression test each, on both interpreters (bench time).

Each of these failed on the firmware before the fix (docs/safety.md lists them)."""
import json

import pytest

import settings
from conftest import duty, plug

PILOT_FAULTS = ("pilot_short", "diode_short")


def charging(rig):
    plug(rig, 3000)
    assert rig.bench.contactor
    return rig


def per_tick(rig, fn):
    """Do fn (a request) once per 10 ms tick: the process rig steps a tick per request."""
    before = rig.bench.t
    fn()
    if rig.bench.t == before:
        rig.step()


def open_within(rig, ms):
    t0 = rig.bench.t
    rig.run_until(lambda: not rig.bench.drive, ms + 20)
    return rig.bench.t - t0


def outcome(rig, action_id, limit_ms=15000):
    found = []

    def done():
        found[:] = [e for e in rig.events() if e["type"] in ("push.completed", "push.failed")
                    and e["data"]["actionId"] == action_id]
        return found

    rig.run_until(done, limit_ms)
    return found[0]


# 1. An over-current trip is final: F >= 300 ms, 30 s from the clear, and it trips again.
def test_overcurrent_trip_holds_f_and_the_holdoff(rig):
    charging(rig)
    rig.fault("overcurrent")
    rig.run_until(lambda: not rig.bench.drive, 9000)
    t_trip = rig.bench.t
    rig.run(100)
    assert rig.read()["state"]["fault"] == "OVERCURRENT"
    assert rig.read()["state"]["status"] == "fault"
    rig.run_until(lambda: not rig.bench.f, 2000)
    assert rig.bench.t - t_trip >= 290  # F held
    rig.run_until(lambda: rig.bench.pwm_on, 40000)
    assert rig.bench.t - t_trip >= 30000  # no current offered for the hold-off
    rig.run_until(lambda: len(rig.events("fault.raised")) >= 2, 15000)  # it trips again


def test_overcurrent_retries_are_limited_to_three_per_session(rig):
    charging(rig)
    rig.fault("overcurrent")
    rig.run(3 * 50000)
    assert len(rig.events("fault.raised")) == 3
    assert rig.read()["state"]["fault"] == "OVERCURRENT"
    assert not rig.bench.pwm_on and not rig.bench.drive
    rig.fault("none")
    rig.ev(connected=False)  # only an unplug ends it
    rig.run(500)
    assert rig.read()["state"]["fault"] is None


# 2. No rate of duty changes blinds the reader.
@pytest.mark.parametrize("event", ["unplug", "c_to_b", "pilot_short", "diode_short"])
@pytest.mark.parametrize("writer", ["caps", "commands"])
def test_a_request_every_tick_never_delays_the_open(rig, event, writer):
    charging(rig)
    n = [0]

    def write():
        n[0] += 1
        if writer == "caps":
            rig.settings(max_charge_rate=7.0 if n[0] % 2 else 7.1)
        else:
            rig.command("idle" if n[0] % 2 else "charge", onConflict="cancel_and_replace")

    for _ in range(100):
        per_tick(rig, write)
    if event == "unplug":
        rig.ev(connected=False)
    elif event == "c_to_b":
        rig.ev(request=False)
    else:
        rig.fault(event)
    t0 = rig.bench.t
    if rig.bench.drive:
        while rig.bench.drive:
            assert rig.bench.t - t0 <= 100, "contactor still driven %d ms after %s" % (
                rig.bench.t - t0, event)
            per_tick(rig, write)


def test_duty_changes_are_paced(rig):
    charging(rig)
    start = len(rig.bench.duty_log)
    for i in range(1000):  # 10 s of alternating caps, one per tick
        per_tick(rig, lambda: rig.settings(max_charge_rate=7.0 if i % 2 else 7.1))
    changes = rig.bench.duty_log[start:]
    assert len(changes) <= 2 * (10000 // 5000) + 2, changes  # 10 s: one fall and one rise per 5 s


# 3. An acknowledged idle holds from the moment it is acknowledged.
@pytest.mark.parametrize("delay_ms", [0, 10, 20, 30, 60])
def test_idle_right_after_plug_in(make_rig, delay_ms):
    rig = make_rig()
    rig.run(100)
    rig.ev(connected=True, request=True)
    if delay_ms:
        rig.run(delay_ms)
    reply = rig.command("idle")
    assert reply["meta"]["status"] == 202
    evt = outcome(rig, reply["data"]["id"])
    rig.run(10000)
    if evt["type"] == "push.completed":
        assert rig.bench.contactor_log == [] and rig.read()["state"]["status"] == "idle"
    else:  # failed honestly: nothing changed, the session charges
        assert evt["data"]["errorCode"] == "VEHICLE_NOT_CONNECTED"
        assert rig.bench.contactor


def test_idle_right_after_boot_holds(make_rig, tmp_path):
    rig = make_rig(state_dir=tmp_path / "f")
    rig.ev(connected=True, request=True)
    rig.power_cut()
    rig.run(500)
    rig.boot()
    reply = rig.command("idle")
    evt = outcome(rig, reply["data"]["id"])
    rig.run(10000)
    assert evt["type"] == "push.completed"
    assert rig.bench.contactor_log == [] and rig.read()["state"]["status"] == "idle"


# 4. A duplicate id never runs twice, across a restart; a failed command changes nothing.
def test_retransmitted_charge_after_restart_does_not_unpause(make_rig, tmp_path):
    rig = make_rig(state_dir=tmp_path / "f")
    charging(rig)
    a = rig.command("charge", actionId="act_A")["data"]
    outcome(rig, "act_A")
    rig.command("idle", actionId="act_B")
    outcome(rig, "act_B")
    rig.power_cut()
    rig.run(500)
    rig.boot()
    rig.run(1000)
    again = rig.command("charge", actionId="act_A")
    assert again["meta"]["status"] == 202
    assert again["data"]["createdAt"] == a["createdAt"] and again["data"]["state"] == "completed"
    rig.run(10000)
    assert rig.read()["state"]["status"] == "idle" and not rig.bench.contactor


def test_a_charge_failed_by_a_fault_leaves_the_pause(rig):
    charging(rig)
    outcome(rig, rig.command("idle")["data"]["id"])
    rig.fault("pilot_short")
    rig.run(200)
    evt = outcome(rig, rig.command("charge")["data"]["id"])
    assert evt["type"] == "push.failed" and evt["data"]["errorCode"] == "PILOT_SHORT"
    rig.fault("none")
    rig.run(45000)
    assert rig.read()["state"]["status"] == "idle"
    assert not rig.bench.contactor and rig.bench.x1


# 5. Every conversion rounds toward less current.
@pytest.mark.parametrize("voltage,kw", [(230, 1.3799), (239.9, 1.439), (230, 1.37999)])
def test_a_cap_just_under_6_a_suspends(make_rig, voltage, kw):
    rig = make_rig(voltage=voltage)
    plug(rig, 3000)
    rig.settings(max_charge_rate=kw)
    rig.run(7000)
    state = rig.read()["state"]
    assert state["status"] == "suspended" and state["offeredCurrent"] == 0
    assert rig.bench.x1


def test_no_cap_is_exceeded_on_a_dense_grid():
    from fractions import Fraction
    for volts10 in range(2000, 2501, 7):  # 200.0 V .. 250.0 V
        volts = volts10 / 10
        for phases in (1, 3):
            for w in range(0, 50001, 37):
                kw = w / 1000
                for value in (kw, kw + 0.0004, kw - 0.0004):
                    if not 0 <= value <= 50:
                        continue
                    got_w = settings.watts(value)
                    assert Fraction(got_w) <= Fraction(repr(value)) * 1000 + Fraction(1, 200)
                    da = got_w * 100 // (settings.decivolts(volts) * phases)
                    offered_w = Fraction(da, 10) * Fraction(repr(volts)) * phases
                    assert offered_w <= Fraction(repr(value)) * 1000 + Fraction(1, 200), (
                        value, volts, phases, da)
    assert settings.watts(1.38) == 1380 and settings.decivolts(239.9) == 2399


# 6. Latched faults: the first stays, one event per real change.
def test_weld_and_rcd_do_not_flip_the_fault(rig):
    charging(rig)
    rig.fault("contactor_weld")
    rig.ev(request=False)
    rig.run(1000)
    rig.fault("rcd_trip")
    rig.run(10000)
    raised = rig.events("fault.raised")
    assert [e["data"]["fault"] for e in raised] == ["CONTACTOR_WELDED"]
    assert rig.read()["state"]["fault"] == "CONTACTOR_WELDED"
    assert rig.read()["diagnostics"]["eventsDropped"] == 0


# 7. The hold-off runs from the clear.
def test_holdoff_counts_from_the_clear(rig):
    charging(rig)
    rig.fault("pilot_short")
    rig.run(40000)
    rig.fault("none")
    t_clear = rig.bench.t
    rig.run_until(lambda: rig.bench.contactor, 40000)
    assert rig.bench.t - t_clear >= 30000


# 8. Unknown current is "may be under load".
def test_without_a_meter_idle_waits_for_the_vehicle(make_rig):
    rig = make_rig(metered=False)
    plug(rig, 3000, obeysPilot=False)  # keeps C and draws after PWM stops
    t0 = rig.bench.t
    outcome(rig, rig.command("idle")["data"]["id"])
    opened = rig.bench.contactor_log[-1]
    assert opened[1] is False and 6000 <= opened[0] - t0 <= 6100


# 10. An acknowledged action ends with an event, across a power cut.
def test_an_action_acknowledged_before_a_power_cut_ends_after_it(make_rig, tmp_path):
    rig = make_rig(state_dir=tmp_path / "f")
    plug(rig, 3000, obeysPilot=False)  # the idle cannot complete for 6 s
    reply = rig.command("idle", actionId="act_cut")
    assert reply["meta"]["status"] == 202
    rig.power_cut()
    rig.run(1000)
    rig.boot()
    evt = outcome(rig, "act_cut")
    assert evt["type"] == "push.completed"
    assert rig.read()["lastAction"]["id"] == "act_cut"
    assert rig.read()["lastAction"]["state"] == "completed"


def test_a_board_whose_clock_was_never_set_boots_with_an_ended_action(make_rig, tmp_path):
    # Found by the site fuzzer (issue 22): without a clock (an ESP32 whose NTP failed) an
    # action ends with no time stamp; the journal kept it so, and the next boot raised
    # KeyError('updatedAt') taking it up: the agent never started.
    rig = make_rig(state_dir=tmp_path / "f", clock_ms=None)
    rig.run(1000)
    assert rig.command("charge", actionId="act_nc")["meta"]["status"] == 202
    rig.run(6000)  # no vehicle: it fails (its event is out; the journal keeps the end)
    rig.power_cut()
    rig.boot()
    rig.run(500)
    ends = {e["id"]: e for e in rig.events() if e["data"].get("actionId") == "act_nc"}
    assert len(ends) == 1 and list(ends.values())[0]["type"] == "push.failed"
    assert rig.read()["lastAction"]["id"] == "act_nc"


def test_a_terminal_event_lost_in_a_power_cut_is_sent_again_with_its_id(make_rig, tmp_path):
    rig = make_rig(state_dir=tmp_path / "f")
    charging(rig)
    rig.command("idle", actionId="act_x")
    rig.run_until(lambda: not rig.bench.contactor, 7000)
    rig.step()  # the slot judges it; the worker has not yet built the event
    rig.power_cut()
    rig.boot()
    rig.run(500)
    ends = [e for e in rig.events() if e["data"].get("actionId") == "act_x"
            and e["type"].startswith("push")]
    assert len({e["id"] for e in ends}) == 1 and ends[0]["type"] == "push.completed"


# 11. A failing flash write is reported and changes only the safe thing.
def test_a_failing_flash_write_is_reported_and_the_lower_cap_enforced(make_rig, tmp_path):
    import os
    rig = make_rig(state_dir=tmp_path / "f")
    charging(rig)
    os.makedirs(str(tmp_path / "f" / "cap.tmp"))  # the next write of the cap cannot happen
    reply = rig.settings(max_charge_rate=3.68)
    assert reply["meta"]["status"] == 500 and reply["error"]["code"] == "STORAGE_FAILED"
    rig.run(3000)
    assert duty(rig) == 26.66  # the lower cap applies
    state = rig.read()["state"]
    assert state["storage"] == "failed"
    assert rig.events("storage.failed")[0]["data"]["key"] == "cap"
    assert rig.read()["state"]["status"] == "charging"  # still answering, still safe


# 13. Local duties do not depend on the broker: the factory reset is read by the worker,
# which runs without one (lockstep rigs have no broker at all; the MQTT test is in
# test_mqtt_faults.py).
def test_factory_reset_and_cleared_pause_are_written_by_the_worker(make_rig, tmp_path):
    import record
    rig = make_rig(state_dir=tmp_path / "f", default_kw=11)
    charging(rig)
    rig.settings(max_charge_rate=3.68)
    outcome(rig, rig.command("idle")["data"]["id"])
    assert record.unword((tmp_path / "f" / "pause").read_bytes()) == 1
    rig.ev(connected=False)
    rig.run(500)
    assert record.unword((tmp_path / "f" / "pause").read_bytes()) == 0
    rig.factory_reset()
    assert record.unword((tmp_path / "f" / "cap").read_bytes()) == 11000


# 14. A request without a readable requestId changes nothing.
@pytest.mark.parametrize("rid", [None, 5, "", "r" * 200, "caf\u00e9", "\ud800"])
def test_requests_without_a_readable_request_id_change_nothing(rig, rid):
    body = {"settings": {"max_charge_rate": {"value": 3.68, "unit": "kw"}}}
    if rid is not None:
        body["requestId"] = rid
    reply = rig.request("settings", json.dumps(body).encode())
    assert reply["meta"]["status"] == 400 and reply["meta"]["requestId"] is None
    assert rig.read()["settings"]["max_charge_rate"]["value"] == 50
    reply = rig.request("commands", json.dumps({"action": {"command": "idle"}}).encode())
    assert reply["meta"]["status"] == 400 and rig.read()["lastAction"] is None


# 15. Replies are valid UTF-8 whatever came in; the advertised execution shape is accepted.
@pytest.mark.parametrize("payload", [
    b'{"requestId": "r", "action": {"command": "\\ud800"}}',
    b'{"requestId": "r", "action": {"command": "charge"}, "onConflict": "\\udfff"}',
    b'{"requestId": "r", "settings": {"max_charge_rate": {"value": 7, "unit": "\\ud800"}}}',
    b'{"requestId": "r", "settings": {"\\ud800": {"value": 7, "unit": "kw"}}}',
    b'{"requestId": "r", "\\ud800": 1}',
    b'{"requestId": "r", "action": {"command": "charge", "parameters": {"\\ud800": "\\ud800"}}}',
])
def test_replies_are_valid_utf8(rig, payload):
    kind = "commands" if b"action" in payload or b'"\\ud800": 1' in payload else "settings"
    rig.request(kind, payload)
    raw = [p for t, p, _ in rig.published if t.endswith("responses")]
    assert raw  # parsed by the rig as JSON from UTF-8 text
    text = json.dumps(raw[-1], ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogate survived


def test_execution_as_the_read_advertises_it(rig):
    plug(rig, 2000)
    reply = rig.command("charge", **{})
    assert reply["meta"]["status"] == 202
    body = {"requestId": "r", "action": {"command": "idle", "execution": ["immediate"]},
            "onConflict": "cancel_and_replace"}
    assert rig.request("commands", body)["meta"]["status"] == 202


# Also from issue 10: a corrupt record must not lose the pause (a reboot never starts
# charging that the user paused).
def test_a_corrupt_pause_record_holds_the_session(make_rig, tmp_path):
    rig = make_rig(state_dir=tmp_path / "f")
    charging(rig)
    outcome(rig, rig.command("idle")["data"]["id"])
    rig.power_cut()
    (tmp_path / "f" / "pause").write_bytes(b"\x00\x00\x01\x00")  # fails its CRC
    rig.boot()
    rig.run(3000)
    assert rig.read()["state"]["status"] == "idle" and not rig.bench.contactor
    assert [e["data"]["key"] for e in rig.events("storage.corrupt")] == ["pause"]


# Found by the scenario fuzzer (tools/bench/fuzz.py) after the fixes above.
def test_a_burst_of_replacements_keeps_every_terminal_event_across_a_power_cut(make_rig, tmp_path):
    rig = make_rig(state_dir=tmp_path / "f")
    plug(rig, 3000, obeysPilot=False)  # an idle stays in flight for 6 s
    acked = []
    for i, name in enumerate(("charge", "idle", "charge", "idle", "charge", "idle")):
        reply = rig.command(name, actionId="b%d" % i, onConflict="cancel_and_replace")
        if reply["meta"]["status"] == 202:
            acked.append("b%d" % i)
        else:  # backpressure, never a lost event: 429 and nothing changed
            assert reply["meta"]["status"] == 429
    rig.power_cut()
    rig.boot()
    rig.run(15000)
    for aid in acked:
        ends = {e["id"] for e in rig.events() if e["data"].get("actionId") == aid
                and e["type"] in ("push.completed", "push.failed", "action.cancelled")}
        assert len(ends) == 1, (aid, ends)


def test_a_failure_judged_during_a_pilot_short_keeps_the_pause(make_rig, tmp_path):
    rig = make_rig(state_dir=tmp_path / "f")
    charging(rig)
    outcome(rig, rig.command("idle")["data"]["id"])
    rig.command("idle", actionId="i2")
    rig.power_cut()
    rig.fault("pilot_short")  # the restart finds a short: i2 fails PILOT_SHORT
    rig.boot()
    outcome(rig, "i2")
    rig.fault("none")
    rig.run(1000)
    rig.power_cut()
    rig.boot()
    rig.run(40000)
    assert rig.read()["state"]["status"] == "idle" and not rig.bench.pwm_on


def test_a_command_on_a_charger_latched_since_boot_fails_at_once(make_rig, tmp_path):
    rig = make_rig(state_dir=tmp_path / "f")
    rig.fault("rcd_trip")
    rig.run(500)
    rig.power_cut()
    rig.boot()  # still tripped: latched from the first tick, the pilot never read
    rig.ev(connected=True)
    rig.run(1000)
    evt = outcome(rig, rig.command("idle", actionId="late")["data"]["id"], 2000)
    assert evt["type"] == "push.failed" and evt["data"]["errorCode"] == "RCD_TRIP"
