"""The cloud's webhooks (issue 25, item 4): registered per key, signed so that the
`standardwebhooks` and `svix` libraries verify them as receivers (cloud_kit.Receiver),
at least once from the outbox with backoff, the same id on every attempt, and nothing lost
when the service is killed mid-delivery or is down while a charger reports."""
import json
import time

import pytest

from cloud_kit import Cloud, Receiver, RigCharger, raw_client
from e2e import wait_for
from test_cloud_api import plugged

ALL = ["push.completed", "push.failed", "device.connected", "device.disconnected"]


@pytest.fixture(scope="module")
def cloud(module_broker, tmp_path_factory):
    c = Cloud(module_broker, tmp_path_factory.mktemp("hooks") / "cloud.db", "--retry-first", "0.3",
              "--webhook-timeout", "1", "--live-wait", "1", "--write-wait", "2").start()
    yield c
    c.stop()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def register(api, url, events=ALL):
    r = api.post("/webhooks", json={"url": url, "events": events})
    assert r.status_code == 201, r.text
    return r.json()["data"]


def of(receiver, kind, device_id):
    return [e for e in receiver.accepted if e["type"] == kind and
            e["data"].get("deviceId") == device_id]


def test_registration(api):
    hook = register(api, "http://127.0.0.1:9/hook", ["push.completed"])
    assert hook["secret"].startswith("whsec_") and hook["events"] == ["push.completed"]
    assert hook["id"].startswith("wh_") and hook["createdAt"]
    listed = api.get("/webhooks").json()["data"]
    assert hook["id"] in [h["id"] for h in listed]
    assert all("secret" not in h for h in listed)  # shown once
    for body in ({"url": "ftp://x/y", "events": ALL}, {"url": "http://x/y", "events": []},
                 {"url": "http://x/y", "events": ["session.started"]},
                 {"url": "http://x/y"}, {"url": "http://x/y", "events": ALL, "extra": 1}):
        r = api.post("/webhooks", json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_REQUEST", body
    assert api.delete("/webhooks/" + hook["id"]).status_code == 200
    r = api.delete("/webhooks/" + hook["id"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "WEBHOOK_NOT_FOUND"


def test_events_verified_by_both_libraries_and_retried_under_one_id(api, module_broker, receiver,
                                                                     tmp_path):
    hook = register(api, receiver.url)
    receiver.secret = hook["secret"]
    ch = RigCharger(module_broker, "hook-1", tmp_path / "hook-1")
    try:
        wait_for(lambda: of(receiver, "device.connected", "hook-1"), 10)
        plugged(api, ch)
        receiver.answers = [500, 503]  # the first two attempts fail
        r = api.post("/ev-charger/hook-1", json={"action": {"command": "idle"}})
        action = r.json()["data"]
        done = wait_for(lambda: of(receiver, "push.completed", "hook-1"), 10)[0]
        assert done["data"]["actionId"] == action["id"] and done["data"]["command"] == "idle"
        assert done["data"]["result"]["success"] is True and done["id"].startswith("evt_")
        tries = [(h, good) for h, body, good in receiver.attempts
                 if json.loads(body)["id"] == done["id"]]
        assert len(tries) == 3 and all(good for _, good in tries)
        at = [t for (h, body, _), t in zip(receiver.attempts, receiver.times)
              if json.loads(body)["id"] == done["id"]]
        first_gap, second_gap = at[1] - at[0], at[2] - at[1]
        # 0.3 s, then 0.6 s: each retry waits at least its doubled delay (a loaded machine
        # may add to either, so no ratio between them is asked for)
        assert 0.28 < first_gap < 1.5 and 0.57 < second_gap < 3
        assert {h["webhook-id"] for h, _ in tries} == {h["svix-id"] for h, _ in tries} == \
            {done["id"]}  # one id for every attempt, in both header sets
        stamps = [int(h["webhook-timestamp"]) for h, _ in tries]
        assert stamps == sorted(stamps)  # signed anew each time
        # No vehicle: the command fails, push.failed, with the charger's code.
        ch.do(lambda rig: rig.bench.set_ev({"connected": False}))
        wait_for(lambda: api.get("/ev-charger/hook-1", params={"expedite": "true"}).json()[
            "data"]["state"]["status"] == "disconnected")
        r = api.post("/ev-charger/hook-1", json={"action": {"command": "charge"}})
        failed = wait_for(lambda: of(receiver, "push.failed", "hook-1"), 20)[0]
        assert failed["data"]["actionId"] == r.json()["data"]["id"]
        assert failed["data"]["errorCode"] == "VEHICLE_NOT_CONNECTED"
        ch.drop()
        gone = wait_for(lambda: of(receiver, "device.disconnected", "hook-1"), 10)[0]
        assert gone["data"]["disconnectedAt"]
    finally:
        ch.close()
    # A bad signature is refused by both libraries (the receiver's own check is real).
    headers, body, _ = receiver.attempts[-1]
    assert not receiver.verify(body + b" ", headers)
    assert not receiver.verify(body, dict(headers, **{
        "webhook-signature": "v1,AAAA", "svix-signature": "v1,AAAA"}))


def test_a_key_gets_only_its_chargers_events(api, cloud, module_broker, receiver, tmp_path):
    import subprocess
    import sys
    from tools.paths import ROOT
    out = subprocess.run([sys.executable, "-m", "tools.cloud", "keys", "add", "--db", cloud.db,
                          "--device", "mine-1"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    key = out.stdout.split()[2]
    with cloud.client(key) as scoped:
        receiver.secret = register(scoped, receiver.url, ["device.connected"])["secret"]
    chargers = [RigCharger(module_broker, d, tmp_path / d) for d in ("other-1", "mine-1")]
    try:
        wait_for(lambda: of(receiver, "device.connected", "mine-1"), 10)
        time.sleep(0.5)
        assert not of(receiver, "device.connected", "other-1")
    finally:
        for ch in chargers:
            ch.close()


def test_kill_mid_delivery_then_restart_delivers_the_same_id(api, cloud, module_broker, receiver,
                                                             tmp_path):
    hook = register(api, receiver.url, ["push.completed"])
    receiver.secret = hook["secret"]
    ch = RigCharger(module_broker, "crash-1", tmp_path / "crash-1")
    try:
        plugged(api, ch)
        receiver.hold = __import__("threading").Event()  # the receiver hangs
        r = api.post("/ev-charger/crash-1", json={"action": {"command": "idle"}})
        action_id = r.json()["data"]["id"]
        first = wait_for(lambda: [a for a in receiver.attempts
                                  if json.loads(a[1])["data"]["actionId"] == action_id], 10)
        cloud.kill()  # mid-delivery: the POST is in flight, the row leased
        receiver.hold.set()
        receiver.hold = None
        assert not receiver.accepted or all(
            e["data"]["actionId"] != action_id for e in receiver.accepted)  # none answered
        cloud.start()
        got = wait_for(lambda: [e for e in receiver.accepted
                                if e.get("data", {}).get("actionId") == action_id], 15)
        assert got[0]["id"] == json.loads(first[0][1])["id"]  # the same event id
        assert first[0][2]  # and every attempt verified
    finally:
        ch.close()


def test_events_while_the_service_is_down_are_delivered_after(api, cloud, module_broker, receiver,
                                                              tmp_path):
    hook = register(api, receiver.url, ["push.completed"])
    receiver.secret = hook["secret"]
    ch = RigCharger(module_broker, "down-1", tmp_path / "down-1")
    try:
        plugged(api, ch)
        cloud.kill()
        # A command from another client while the service is down: the charger's
        # push.completed waits in the broker for the service's persistent session.
        mqtt = raw_client(module_broker, "operator")
        mqtt.publish("ev-charger/down-1/commands", json.dumps(
            {"requestId": "op-1", "action": {"command": "idle"}, "actionId": "act_down_1"}),
            qos=1).wait_for_publish(5)
        time.sleep(2)  # the charger completes the pause meanwhile
        mqtt.loop_stop()
        mqtt.disconnect()
        cloud.start()
        got = wait_for(lambda: [e for e in receiver.accepted
                                if e["data"].get("actionId") == "act_down_1"], 15)
        assert got[0]["type"] == "push.completed"
        with cloud.client() as fresh:
            assert fresh.get("/actions/act_down_1").json()["data"]["state"] == "completed"
    finally:
        ch.close()
