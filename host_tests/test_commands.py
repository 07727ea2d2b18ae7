"""charge and idle: one command slot, actions that end honestly (both interpreters)."""
import pytest

from conftest import plug

PATH = "/ev-charger/charger-1"


def send(rig, body):
    reply = rig.request("commands", body)
    meta = reply.pop("meta")
    assert meta["path"] == PATH
    return meta["status"], reply


def outcome(rig, action_id, limit_ms=12000):
    """Run until the action's push event arrives; return it."""
    found = []

    def done():
        rig.pump()
        found[:] = [e for e in rig.events() if e["type"] in ("push.completed", "push.failed")
                    and e["data"]["actionId"] == action_id]
        return found

    rig.run_until(done, limit_ms)
    return found[0]


def to_status(rig, status):
    if status == "disconnected":
        rig.run(100)
    elif status == "connected":
        plug(rig, 2000, request=False)
    elif status == "charging":
        plug(rig, 3000)
    elif status == "idle":
        plug(rig, 3000)
        a = send(rig, {"requestId": "p", "action": {"command": "idle"}})[1]["data"]
        outcome(rig, a["id"])
    elif status == "suspended":
        plug(rig, 3000)
        rig.settings(max_charge_rate=1.0)
        rig.run(7000)
    elif status == "fault":
        plug(rig, 3000)
        rig.fault("pilot_short")
        rig.run(500)
    assert rig.read()["state"]["status"] == status


@pytest.mark.parametrize("start,command,terminal,error,after", [
    ("disconnected", "charge", "failed", "VEHICLE_NOT_CONNECTED", "disconnected"),
    ("disconnected", "idle", "failed", "VEHICLE_NOT_CONNECTED", "disconnected"),
    ("connected", "charge", "completed", None, "connected"),
    ("connected", "idle", "completed", None, "idle"),
    ("charging", "charge", "completed", None, "charging"),
    ("charging", "idle", "completed", None, "idle"),
    ("idle", "charge", "completed", None, "charging"),
    ("idle", "idle", "completed", None, "idle"),
    ("suspended", "charge", "completed", None, "suspended"),
    ("suspended", "idle", "completed", None, "idle"),
    ("fault", "charge", "failed", "PILOT_SHORT", "fault"),
    ("fault", "idle", "failed", "PILOT_SHORT", "fault"),
])
def test_command_from_every_status(rig, start, command, terminal, error, after):
    to_status(rig, start)
    cap_before = rig.read()["settings"]["max_charge_rate"]
    status, reply = send(rig, {"requestId": "r-1", "action": {"command": command}})
    assert status == 202
    action = reply["data"]
    assert action["id"].startswith("act_") and action["state"] == "acknowledged"
    assert {k: action[k] for k in ("deviceId", "deviceType", "command", "parameters")} == {
        "deviceId": "charger-1", "deviceType": "ev_charger", "command": command,
        "parameters": None}
    evt = outcome(rig, action["id"])["data"]
    assert evt["result"]["success"] is (terminal == "completed")
    assert evt.get("errorCode") == error
    rig.run(5000)
    read = rig.read()
    assert read["lastAction"]["id"] == action["id"] and read["lastAction"]["state"] == terminal
    assert read["state"]["status"] == after
    assert read["settings"]["max_charge_rate"] == cap_before  # the cap survives commands


def test_push_completed_flat_body(rig):
    plug(rig, 3000)
    _, reply = send(rig, {"requestId": "r", "action": {"command": "idle"}, "actionId": "act_x1"})
    evt = outcome(rig, "act_x1")
    assert evt["id"].startswith("evt_") and evt["type"] == "push.completed"
    data = evt["data"]
    assert set(data) == {"actionId", "deviceId", "deviceType", "command", "parameters",
                         "result", "completedAt"}
    assert data["result"] == {"success": True, "message": "paused"}
    assert data["completedAt"] >= reply["data"]["createdAt"]


def test_idle_while_car_keeps_drawing_forces_open_at_6_s(rig):
    plug(rig, 3000, obeysPilot=False)
    t0 = rig.bench.t
    _, reply = send(rig, {"requestId": "r", "action": {"command": "idle"}})
    evt = outcome(rig, reply["data"]["id"])
    opened = rig.bench.contactor_log[-1]
    assert opened[1] is False and 6000 <= opened[0] - t0 <= 6100
    assert evt["data"]["result"] == {
        "success": True, "message": "paused; contactor opened under load after 6 s"}


def test_conflict_without_strategy(rig):
    plug(rig, 3000, obeysPilot=False)  # idle stays acknowledged for 6 s
    _, first = send(rig, {"requestId": "r1", "action": {"command": "idle"}, "actionId": "a1"})
    status, reply = send(rig, {"requestId": "r2", "action": {"command": "charge"}})
    assert (status, reply) == (409, {"success": False, "error": {
        "code": "CONFLICT", "message": "an action is in flight",
        "details": {"reason": "no_strategy_supplied", "conflictingActionIds": ["a1"],
                    "strategies": ["cancel_and_replace"]}}})
    assert outcome(rig, "a1")["type"] == "push.completed"  # the first one was untouched


def test_cancel_and_replace(rig):
    plug(rig, 3000, obeysPilot=False)
    send(rig, {"requestId": "r1", "action": {"command": "idle"}, "actionId": "a1"})
    rig.run(1000)
    status, reply = send(rig, {"requestId": "r2", "action": {"command": "charge"},
                               "onConflict": "cancel_and_replace", "actionId": "a2"})
    assert status == 202 and reply["data"]["id"] == "a2"
    assert outcome(rig, "a2")["type"] == "push.completed"
    cancelled = rig.events("action.cancelled")
    assert [e["data"]["actionId"] for e in cancelled] == ["a1"]
    assert not [e for e in rig.events() if e["type"].startswith("push")
                and e["data"]["actionId"] == "a1"]
    rig.run(3000)
    assert rig.read()["state"]["status"] == "charging"


@pytest.mark.parametrize("strategy", ["queue_after", "replace", 5])
def test_other_strategies_are_422(rig, strategy):
    plug(rig, 3000, obeysPilot=False)
    send(rig, {"requestId": "r1", "action": {"command": "idle"}, "actionId": "a1"})
    status, reply = send(rig, {"requestId": "r2", "action": {"command": "charge"},
                               "onConflict": strategy})
    assert (status, reply) == (422, {"success": False, "error": {
        "code": "STRATEGY_NOT_SUPPORTED", "message": "unsupported conflict strategy",
        "details": {"requested": strategy, "supported": ["cancel_and_replace"]}}})
    assert rig.read()["lastAction"]["id"] == "a1"


def test_repeated_action_id_is_not_run_twice(rig):
    plug(rig, 3000)
    s1, r1 = send(rig, {"requestId": "r1", "action": {"command": "idle"}, "actionId": "dup-1"})
    outcome(rig, "dup-1")
    s2, r2 = send(rig, {"requestId": "r2", "action": {"command": "idle"}, "actionId": "dup-1"})
    assert s1 == s2 == 202
    assert r2["data"]["id"] == "dup-1" and r2["data"]["state"] == "completed"
    assert r2["data"]["createdAt"] == r1["data"]["createdAt"]
    rig.run(1000)
    assert len([e for e in rig.events("push.completed")
                if e["data"]["actionId"] == "dup-1"]) == 1


@pytest.mark.parametrize("action,status,code", [
    ({"command": "boost"}, 422, "UNSUPPORTED_MODE"),
    ({"command": "charge", "parameters": {"power": 3}}, 422, "UNSUPPORTED_PARAMETER"),
    ({"command": "charge", "start": "2026-11-24T10:00:00Z"}, 422, "EXECUTION_NOT_SUPPORTED"),
    ({"command": "idle", "end": "2026-11-24T10:00:00Z"}, 422, "EXECUTION_NOT_SUPPORTED"),
    ({"command": 7}, 400, "INVALID_REQUEST"),
    ({}, 400, "INVALID_REQUEST"),
    ({"command": "charge", "colour": "red"}, 400, "INVALID_REQUEST"),
])
def test_bad_commands(rig, action, status, code):
    plug(rig, 2000)
    got, reply = send(rig, {"requestId": "r", "action": action})
    assert got == status and reply["error"]["code"] == code
    assert rig.read()["lastAction"] is None


def test_bad_command_reply_bodies(rig):
    assert send(rig, {"requestId": "r", "action": {"command": "boost"}}) == (422, {
        "success": False, "error": {"code": "UNSUPPORTED_MODE", "message": "unknown command",
                                    "details": {"requested": "boost",
                                                "supported": ["charge", "idle"]}}})
    assert send(rig, {"requestId": "r", "action": {"command": "charge",
                                                   "parameters": {"power": 3}}}) == (422, {
        "success": False, "error": {"code": "UNSUPPORTED_PARAMETER",
                                    "message": "commands take no parameters",
                                    "details": {"parameters": {"power": 3}}}})
    assert send(rig, {"requestId": "r", "action": {"command": "charge", "start": "x"}}) == (
        422, {"success": False, "error": {"code": "EXECUTION_NOT_SUPPORTED",
                                          "message": "commands run immediately",
                                          "details": {"supported": ["immediate"]}}})


def test_power_cut_while_idle_stays_idle(make_rig, tmp_path):
    rig = make_rig(state_dir=tmp_path / "f")
    plug(rig, 3000)
    _, reply = send(rig, {"requestId": "r", "action": {"command": "idle"}})
    outcome(rig, reply["data"]["id"])
    rig.power_cut()
    rig.run(2000)
    rig.boot()
    start = len(rig.bench.duty_log)
    rig.run(5000)
    assert rig.read()["state"]["status"] == "idle"
    assert all(rig.bench.x1_or_f(c) for _, c in rig.bench.duty_log[start:])
    assert rig.bench.x1 and not rig.bench.contactor
    # Charge resumes only when asked.
    send(rig, {"requestId": "r", "action": {"command": "charge"}})
    rig.run(3000)
    assert rig.read()["state"]["status"] == "charging"


def test_pause_is_for_the_session_not_the_next_vehicle(make_rig, tmp_path):
    rig = make_rig(state_dir=tmp_path / "f")
    plug(rig, 3000)
    send(rig, {"requestId": "r", "action": {"command": "idle"}})
    rig.run(3000)
    rig.ev(connected=False)
    rig.run(1000)
    plug(rig, 3000)
    assert rig.read()["state"]["status"] == "charging"
    rig.power_cut()
    rig.boot()
    rig.run(3000)
    assert rig.read()["state"]["status"] == "charging"


def test_session_starts_by_itself_and_ends_on_unplug(rig):
    plug(rig, 3000)
    assert rig.read()["state"]["status"] == "charging"
    rig.ev(connected=False)
    rig.run(500)
    assert [e["type"] for e in rig.events() if e["type"].startswith("session")] == [
        "session.started", "session.ended"]


def test_power_cut_right_after_idle_is_acknowledged(make_rig, tmp_path):
    rig = make_rig(state_dir=tmp_path / "f")
    plug(rig, 3000, obeysPilot=False)  # the idle action cannot complete for 6 s
    status, _ = send(rig, {"requestId": "r", "action": {"command": "idle"}})
    assert status == 202
    rig.power_cut()
    rig.run(1000)
    rig.boot()
    rig.run(3000)
    assert rig.read()["state"]["status"] == "idle"
    assert not rig.bench.contactor


@pytest.fixture
def no_room_for_records(monkeypatch):
    """The heap has no room to build a flash record (record.blob raises MemoryError), as
    at 34K during a burst: `on` switches it (the in-process rig only: CPython patching)."""
    import record
    real = record.blob
    state = {"on": False}

    def blob(body):
        if state["on"]:
            raise MemoryError("memory allocation failed, allocating 296 bytes")
        return real(body)

    monkeypatch.setattr(record, "blob", blob)
    return state


def test_a_journal_that_meets_no_heap_changes_nothing_and_ends_what_runs(tmp_path,
                                                                          no_room_for_records):
    # A command whose journal cannot be built: before, the MemoryError left the action in
    # flight marked cancelled while it still ran, and answered 500 INTERNAL_ERROR; and the
    # worker's end of an action lost its terminal event. Now it is a storage failure like
    # flash refusing it: 500 STORAGE_FAILED, nothing changed, and the end's event still goes.
    # (The in-process rig: record.blob is patched in this process.)
    from tools.bench.rig import InProcessRig
    rig = InProcessRig(str(tmp_path))
    plug(rig, 3000)
    first = send(rig, {"requestId": "a", "action": {"command": "idle"}})[1]["data"]
    no_room_for_records["on"] = True
    status, reply = send(rig, {"requestId": "b", "action": {"command": "charge"},
                               "onConflict": "cancel_and_replace"})
    assert (status, reply["error"]["code"]) == (500, "STORAGE_FAILED"), reply
    assert [a for a in rig.agent.actions.recent if a["id"] == first["id"]][0]["state"] == \
        "acknowledged"
    done = outcome(rig, first["id"])  # the worker ends it with no room for its journal either
    assert done["type"] == "push.completed"
    assert rig.read()["state"]["storage"] == "failed"
    rig.close()
