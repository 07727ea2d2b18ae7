"""The cloud service's API against chargers on a real broker (issue 25, items 1-3 and 7):
the tiers and their transitions, writes relayed with the charger's own codes, actions kept
across a charger going offline and a restart of the service, keys, and hostile input. The
chargers are the firmware in-process (cloud_kit.RigCharger); the service is its own process
with short waits (1 s) and TTLs (4 s, expedite 1 s), so that each transition takes seconds.
"""
import json
import subprocess
import sys
import time

import httpx
import pytest

from cloud_kit import Cloud, RigCharger, raw_client
from e2e import wait_for
from tools.cloud.keys import CACHE_S
from tools.paths import ROOT

WAIT = ["--live-wait", "1", "--write-wait", "1", "--cache-ttl", "4", "--expedite-ttl", "1"]


@pytest.fixture(scope="module")
def cloud(module_broker, tmp_path_factory):
    c = Cloud(module_broker, tmp_path_factory.mktemp("cloud") / "cloud.db", *WAIT).start()
    yield c
    c.stop()


@pytest.fixture
def charger(module_broker, tmp_path, request):
    made = []

    def make(device_id=None, state_dir=None):
        device_id = device_id or "rig-%s-%d" % (request.node.name[:20].replace("[", "-")
                                                .replace("]", ""), len(made))
        ch = RigCharger(module_broker, device_id, state_dir or tmp_path / device_id)
        made.append(ch)
        return ch

    yield make
    for ch in made:
        ch.close()


def read(api, device_id, **params):
    r = api.get("/ev-charger/" + device_id, params=params)
    return r.status_code, r.json()


def tier(api, device_id, **params):
    status, body = read(api, device_id, **params)
    assert status == 200, body
    return body["data"]["metadata"]["source"], body["data"]


def seen(api, device_id):
    return wait_for(lambda: read(api, device_id)[0] == 200, 10)


def plugged(api, ch):
    seen(api, ch.device_id)
    ch.plug()
    wait_for(lambda: tier(api, ch.device_id)[1]["state"]["status"] == "charging")


def test_tiers_cache_live_fallback_late_answer_offline_and_back(api, charger, tmp_path):
    ch = charger()
    seen(api, ch.device_id)
    source, data = tier(api, ch.device_id)
    assert source == "cache" and data["metadata"]["deviceSource"] == "projection"
    assert data["sync"]["available"] is True and data["sync"]["lastPulledAt"]
    assert data["id"] == ch.device_id and data["state"]["status"] == "disconnected"
    time.sleep(1.1)  # older than the expedite TTL, younger than the TTL
    assert tier(api, ch.device_id)[0] == "cache"
    source, live = tier(api, ch.device_id, expedite="true")
    assert source == "live" and live["sync"]["available"] is True
    assert live["sync"]["lastPulledAt"] > data["sync"]["lastPulledAt"]
    assert tier(api, ch.device_id, expedite="true")[0] == "cache"  # the live read refreshed it

    ch.silent = True  # connected, but it does not answer
    time.sleep(1.1)
    t0 = time.monotonic()
    status, body = read(api, ch.device_id, expedite="true")
    fb = body["data"]
    assert fb["metadata"]["source"] == "fallback"
    assert fb["sync"] == {"available": False, "lastPulledAt": live["sync"]["lastPulledAt"]}
    assert 0.9 < time.monotonic() - t0 < 3  # the bounded wait, and no more
    assert 900 < body["meta"]["latencyMs"] < 3000  # counted from the request's arrival

    ch.silent, ch.delay_s = False, 1.5  # it answers, late
    time.sleep(1.1)
    assert tier(api, ch.device_id, expedite="true")[0] == "fallback"
    time.sleep(1)  # the late reply lands in the cache
    source, late = tier(api, ch.device_id, expedite="true")
    assert source == "cache" and late["sync"]["lastPulledAt"] > live["sync"]["lastPulledAt"]

    ch.delay_s = 0
    ch.drop()  # power cut: the broker publishes the will
    wait_for(lambda: tier(api, ch.device_id)[0] == "fallback", 5)
    source, off = tier(api, ch.device_id)
    assert off["sync"]["available"] is False and off["state"] == late["state"]
    t0 = time.monotonic()
    r = api.post("/ev-charger/%s/settings" % ch.device_id,
                 json={"max_charge_rate": {"value": 7.4, "unit": "kw"}})
    assert r.status_code == 503 and r.json()["error"]["code"] == "DEVICE_OFFLINE"
    assert time.monotonic() - t0 < 0.5  # at once
    r = api.post("/ev-charger/" + ch.device_id, json={"action": {"command": "charge"}})
    assert r.status_code == 503 and r.json()["error"]["code"] == "DEVICE_OFFLINE"

    back = charger(ch.device_id, tmp_path / ch.device_id)  # power back: same flash
    wait_for(lambda: tier(api, back.device_id)[0] == "cache", 10)
    source, again = tier(api, back.device_id)
    assert again["sync"]["available"] is True
    assert again["sync"]["lastPulledAt"] > off["sync"]["lastPulledAt"]


def test_never_seen_and_unknown_paths(api):
    status, body = read(api, "no-such-charger")
    assert status == 404 and body["error"]["code"] == "DEVICE_NOT_FOUND"
    assert body["success"] is False and body["meta"]["path"] == "/ev-charger/no-such-charger"
    assert body["meta"]["requestId"].startswith("req_") and body["meta"]["latencyMs"] >= 0
    r = api.post("/ev-charger/no-such-charger/settings",
                 json={"max_charge_rate": {"value": 7.4, "unit": "kw"}})
    assert r.status_code == 404 and r.json()["error"]["code"] == "DEVICE_NOT_FOUND"
    r = api.get("/actions/act_nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "ACTION_NOT_FOUND"
    r = api.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    r = api.put("/ev-charger/x")
    assert r.status_code == 405 and r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def keys_cli(cloud, *args):
    out = subprocess.run([sys.executable, "-m", "tools.cloud", "keys", *args, "--db", cloud.db],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_keys_are_hashed_scoped_and_revocable(api, cloud, charger):
    mine, other = charger(), charger()
    seen(api, mine.device_id)
    seen(api, other.device_id)
    line = keys_cli(cloud, "add", "--name", "one charger", "--device", mine.device_id)
    key_id, key = line.split()[1].rstrip(":"), line.split()[2]
    with open(cloud.db, "rb") as f:
        assert key.encode() not in f.read()  # only its hash is stored
    with cloud.client(key) as scoped:
        assert tier(scoped, mine.device_id)[1]["id"] == mine.device_id
        hidden = read(scoped, other.device_id)
        never = read(scoped, "never-seen")
        assert hidden[0] == never[0] == 404  # a charger it may not see is one never seen
        assert hidden[1]["error"]["code"] == never[1]["error"]["code"] == "DEVICE_NOT_FOUND"
        assert hidden[1]["error"]["message"].replace(other.device_id, "X") == \
            never[1]["error"]["message"].replace("never-seen", "X")
        r = scoped.post("/ev-charger/%s/settings" % other.device_id,
                        json={"max_charge_rate": {"value": 7.4, "unit": "kw"}})
        assert r.status_code == 404
        ids = [d["id"] for d in scoped.get("/ev-charger").json()["data"]]
        assert ids == [mine.device_id]
        listed = api.get("/ev-charger", params={"limit": 1000}).json()["data"]
        everything = [d["id"] for d in listed]
        assert {mine.device_id, other.device_id} <= set(everything)
        assert json.loads(keys_cli(cloud, "list").splitlines()[-1])["devices"] == [mine.device_id]
        keys_cli(cloud, "revoke", key_id)
        time.sleep(CACHE_S + 0.2)  # the per-replica key cache
        assert scoped.get("/ev-charger").status_code == 401
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic " + key},
                    {"Authorization": "Bearer wrong-key-0123456789"}):
        r = httpx.get(cloud.url + "/ev-charger/" + mine.device_id, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"


def test_writes_relay_the_charger_and_actions_are_stored(api, charger):
    ch = charger()
    seen(api, ch.device_id)
    d = "/ev-charger/" + ch.device_id
    r = api.post(d + "/settings", json={"max_charge_rate": {"value": 3.68, "unit": "kW"}})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"deviceId": ch.device_id, "updated": ["max_charge_rate"]}
    r = api.post(d + "/settings", json={"max_charge_rate": {"value": 51, "unit": "kw"},
                                        "colour": {"value": 1, "unit": "kw"}})
    body = r.json()
    assert r.status_code == 422 and body["error"]["code"] == "SETTING_OUT_OF_RANGE"
    assert [e["code"] for e in body["error"]["details"]["errors"]] == [
        "SETTING_OUT_OF_RANGE", "UNSUPPORTED_SETTING"]  # the charger's own answer, whole
    assert body["meta"]["path"] == d + "/settings" and body["meta"]["requestId"].startswith("req_")
    r = api.post(d + "/settings", json={})
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_REQUEST"
    wait_for(lambda: tier(api, ch.device_id)[1]["settings"]["max_charge_rate"]["value"] == 3.68)

    r = api.post(d + "/limit", json={"limit": {"value": 10, "unit": "a"}, "ttl": 60,
                                     "source": "test"})
    assert r.status_code == 200 and r.json()["data"]["limit"] == {"value": 10, "unit": "a"}
    assert api.post(d + "/limit", json={"limit": None}).status_code == 200
    r = api.post(d + "/limit", json={"limit": {"value": 10, "unit": "v"}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "UNSUPPORTED_UNIT"

    ch.plug(obeysPilot=False)  # a car that keeps drawing: idle takes the 6 s pause
    wait_for(lambda: tier(api, ch.device_id, expedite="true")[1]["state"]["status"] == "charging")
    r = api.post(d, json={"action": {"command": "idle"}})
    assert r.status_code == 202, r.text
    first = r.json()["data"]
    assert first["id"].startswith("act_") and first["state"] == "acknowledged"
    assert first["deviceId"] == ch.device_id and first["parameters"] is None
    assert api.get("/actions/" + first["id"]).json()["data"]["state"] == "acknowledged"
    r = api.post(d, json={"action": {"command": "charge"}})
    assert r.status_code == 409 and r.json()["error"]["details"]["conflictingActionIds"] == [
        first["id"]]
    r = api.post(d, json={"action": {"command": "charge"}, "onConflict": "queue_after"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "STRATEGY_NOT_SUPPORTED"
    r = api.post(d, json={"action": {"command": "charge"}, "onConflict": "cancel_and_replace",
                          "actionId": "act_mine_1"})
    assert r.status_code == 202 and r.json()["data"]["id"] == "act_mine_1"
    wait_for(lambda: api.get("/actions/" + first["id"]).json()["data"]["state"] == "cancelled")
    done = wait_for(lambda: (lambda a: a if a["state"] == "completed" else None)(
        api.get("/actions/act_mine_1").json()["data"]), 10)
    assert done["command"] == "charge" and done["updatedAt"] >= done["createdAt"]
    again = api.post(d, json={"action": {"command": "charge"}, "actionId": "act_mine_1"})
    assert again.status_code == 202 and again.json()["data"]["state"] == "completed"


def test_no_answer_in_time_is_504_and_the_action_tells_later(api, charger, cloud):
    ch = charger()
    seen(api, ch.device_id)
    plugged(api, ch)
    ch.delay_s = 1.6  # the reply comes after the write's 1 s
    t0 = time.monotonic()
    r = api.post("/ev-charger/" + ch.device_id, json={"action": {"command": "idle"}})
    assert r.status_code == 504 and 0.9 < time.monotonic() - t0 < 2
    err = r.json()["error"]
    assert err["code"] == "DEVICE_TIMEOUT" and err["details"]["actionId"].startswith("act_")
    action_id = err["details"]["actionId"]
    got = wait_for(lambda: (lambda r: r.json()["data"] if r.status_code == 200 else None)(
        api.get("/actions/" + action_id)), 10)
    assert got["command"] == "idle" and got["deviceId"] == ch.device_id
    wait_for(lambda: api.get("/actions/" + action_id).json()["data"]["state"] == "completed",
             10)
    ch.silent = True
    r = api.post("/ev-charger/%s/settings" % ch.device_id,
                 json={"max_charge_rate": {"value": 7.4, "unit": "kw"}})
    assert r.status_code == 504 and r.json()["error"]["code"] == "DEVICE_TIMEOUT"


def test_actions_outlive_the_charger_and_a_restart_of_the_service(api, charger, cloud):
    ch = charger()
    seen(api, ch.device_id)
    plugged(api, ch)
    r = api.post("/ev-charger/" + ch.device_id, json={"action": {"command": "idle"}})
    action_id = r.json()["data"]["id"]
    wait_for(lambda: api.get("/actions/" + action_id).json()["data"]["state"] == "completed")
    ch.drop()
    wait_for(lambda: tier(api, ch.device_id)[0] == "fallback", 5)
    assert api.get("/actions/" + action_id).json()["data"]["state"] == "completed"
    cloud.kill()  # a crash, not a clean stop
    cloud.start()
    with cloud.client() as fresh:
        kept = fresh.get("/actions/" + action_id)
        assert kept.status_code == 200 and kept.json()["data"]["state"] == "completed"
        source, data = tier(fresh, ch.device_id)
        assert source == "fallback" and data["sync"]["available"] is False


@pytest.mark.parametrize("body,status,code", [
    (b"not json", 400, "INVALID_REQUEST"),
    (b"[1, 2]", 400, "INVALID_REQUEST"),
    (b'{"action": "charge"}', 400, "INVALID_REQUEST"),
    (b'{"action": {"command": 5}}', 400, "INVALID_REQUEST"),
    (b'{"action": {"command": "charge"}, "requestId": "mine"}', 400, "INVALID_REQUEST"),
    (b'{"action": {"command": "charge"}, "pad": "' + b"x" * 5000 + b'"}', 413,
     "PAYLOAD_TOO_LARGE"),
    (b'{"action": {"command": "charge"}, "pad": "' + b"x" * 2000 + b'"}', 413,
     "PAYLOAD_TOO_LARGE"),
    (b'{"action": {"command": "boost"}}', 422, "UNSUPPORTED_MODE"),
])
def test_bad_bodies_get_clear_errors_and_change_nothing(api, charger, body, status, code):
    ch = charger()
    seen(api, ch.device_id)
    before = tier(api, ch.device_id, expedite="true")[1]
    r = api.post("/ev-charger/" + ch.device_id, content=body)
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    after = tier(api, ch.device_id, expedite="true")[1]
    assert after["lastAction"] == before["lastAction"] and after["settings"] == before["settings"]


def test_a_huge_streamed_body_is_cut_off(cloud, api):
    def chunks():
        for _ in range(1000):
            yield b"x" * 65536  # 64 MB if it were all read

    r = api.post("/ev-charger/anything", content=chunks())
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert api.get("/health").status_code == 200


def test_a_hostile_charger_changes_nothing_and_the_service_keeps_serving(api, charger,
                                                                         module_broker):
    good = charger()
    seen(api, good.device_id)
    plugged(api, good)
    r = api.post("/ev-charger/" + good.device_id, json={"action": {"command": "idle"}})
    victim_action = r.json()["data"]["id"]
    wait_for(lambda: api.get("/actions/" + victim_action).json()["data"]["state"] == "completed")
    before = tier(api, good.device_id)[1]
    evil = raw_client(module_broker, "evil")
    read_of = dict(before, id="evil-1")
    for topic, payload in [
        ("ev-charger/evil-1/state", b"{not json"),
        ("ev-charger/evil-1/state", b'{"success": true, "data": NaN}'),
        ("ev-charger/evil-1/state", b"[" * 100000),
        ("ev-charger/evil-1/state", json.dumps({"success": True, "data": dict(
            read_of, state=dict(before["state"], currentPower=1e999))}).replace(
            "Infinity", "1e999").encode()),
        ("ev-charger/evil-1/state", json.dumps({"success": True, "data": dict(
            before, note="x" * 70000)}).encode()),  # too large
        # Another charger's state on its own topic: refused.
        ("ev-charger/evil-1/state", json.dumps({"success": True, "data": before}).encode()),
        ("ev-charger/%s/state" % good.device_id, json.dumps(
            {"success": True, "data": {"id": good.device_id}}).encode()),
        ("ev-charger/evil-1/availability", b"maybe"),
        ("ev-charger/evil-1/responses", b'{"meta": {"requestId": "x", "status": "200"}}'),
        # An event about the good charger's action, from the wrong topic or as another id.
        ("ev-charger/evil-1/events", json.dumps({
            "id": "evt_forged_1", "type": "push.failed", "timestamp": "2026-01-01T00:00:00Z",
            "data": {"actionId": victim_action, "deviceId": good.device_id,
                     "command": "idle"}}).encode()),
        ("ev-charger/evil-1/events", json.dumps({
            "id": "evt_forged_2", "type": "push.failed", "timestamp": "2026-01-01T00:00:00Z",
            "data": {"actionId": victim_action, "command": "idle",
                     "errorCode": "EVIL"}}).encode()),
        ("ev-charger/evil-1/events", b'{"id": 5}'),
    ]:
        evil.publish(topic, payload, qos=1).wait_for_publish(5)
    for i in range(3000):  # a flood of events
        evil.publish("ev-charger/evil-1/events", json.dumps({
            "id": "evt_flood_%d" % i, "type": "session.started", "timestamp": None,
            "data": {"deviceId": "evil-1"}}), qos=0)
    t0 = time.monotonic()
    for _ in range(20):
        assert tier(api, good.device_id)[0] in ("cache", "live")
    assert time.monotonic() - t0 < 5  # still serving, promptly
    time.sleep(1)
    status, body = read(api, "evil-1")
    assert status == 404  # nothing it sent was a state of its own
    action = api.get("/actions/" + victim_action).json()["data"]
    assert action["state"] == "completed" and action["deviceId"] == good.device_id
    after = tier(api, good.device_id)[1]
    assert after["state"]["status"] == before["state"]["status"]
    evil.loop_stop()
    evil.disconnect()
