"""The HTTP front (docs/http.md) against make sim's charger, under micropython (the wheel, and
make unix32 at an ESP32's 56 KB heap): the API page's paths with their envelope, one command
slot with MQTT, and every refusal of hostile input, each a clear status or a closed socket,
with nothing changed and the charger still running."""
import json
import re
import socket
import threading
import time

import pytest

from conftest import plug as plug_rig
from e2e import Charger, HttpApi, InProcessSim, online, wait_for
from tools.bench.broker import free_port
from tools.bench.rig import InProcessRig

TOKEN = "http-test-token-0123456789"
DEVICE = "h-1"
PATH = "/ev-charger/" + DEVICE


@pytest.fixture
def front(broker, tmp_path, agent_build):
    sim = InProcessSim(["--broker", broker.address, "--state-dir", str(tmp_path / "flash"),
                        "--device-id", DEVICE, "--no-page", "--http-port", str(free_port()),
                        "--api-token", TOKEN, *agent_build])
    api = HttpApi(sim.sim.http_port, TOKEN, DEVICE)
    c = Charger(broker.address, DEVICE)
    try:
        online(c)
        yield sim, api, c
    finally:
        c.close()
        sim.close()


def plug(sim, **ev):
    with sim.sim.lock:
        sim.bench.set_ev(dict({"connected": True, "request": True}, **ev))


def meta_ok(meta, path):
    assert re.fullmatch(r"req_[0-9a-f]{20}", meta["requestId"]), meta
    assert meta["path"] == path and meta["timestamp"].startswith("20"), meta
    assert isinstance(meta["latencyMs"], (int, float)) and 0 <= meta["latencyMs"] < 5000, meta


def test_the_api_pages_paths_answer_in_the_envelope(front):
    sim, api, c = front
    status, headers, body = api.call("GET", PATH + "?expedite=true")
    assert status == 200 and headers["content-type"] == "application/json", body
    assert body["success"] and body["data"]["id"] == DEVICE
    assert body["data"]["metadata"]["source"] == "projection" and "diagnostics" in body["data"]
    meta_ok(body["meta"], PATH)
    status, _, body = api.call("POST", PATH + "/settings",
                               {"max_charge_rate": {"value": 3.68, "unit": "kW"}})
    assert (status, body["data"]) == (200, {"deviceId": DEVICE, "updated": ["max_charge_rate"]})
    meta_ok(body["meta"], PATH + "/settings")
    assert api.read()["settings"]["max_charge_rate"]["value"] == 3.68
    assert c.read()["settings"]["max_charge_rate"]["value"] == 3.68  # one cap, both doors
    plug(sim)
    wait_for(lambda: sim.bench.contactor, 10)
    status, _, body = api.call("POST", PATH, {"action": {"command": "charge"},
                                              "actionId": "act_h1"})
    assert status == 202 and body["data"]["id"] == "act_h1", body
    assert body["data"]["state"] == "acknowledged" and body["data"]["parameters"] is None
    wait_for(lambda: api.call("GET", "/actions/act_h1")[2]["data"]["state"] == "completed", 5)
    status, _, body = api.call("GET", "/actions/act_h1")
    assert status == 200 and body["data"]["command"] == "charge"
    meta_ok(body["meta"], "/actions/act_h1")
    status, _, body = api.call("POST", PATH + "/limit", {"limit": {"value": 10, "unit": "a"},
                                                         "ttl": 60, "source": "test"})
    assert status == 200 and body["data"]["limit"] == {"value": 10, "unit": "a"}, body
    assert api.read()["state"]["limitedBy"] == "dynamic_limit"
    status, _, body = api.call("POST", PATH + "/limit", {"limit": None})
    assert status == 200 and body["data"]["limit"] is None
    # The charger's own judgement, relayed with its codes: as over MQTT.
    for path, request, want in (
            ("/settings", {"max_charge_rate": {"value": 7, "unit": "w"}},
             (422, "UNSUPPORTED_UNIT")),
            ("/settings", {"max_current": {"value": 7, "unit": "a"}}, (422, "READ_ONLY_SETTING")),
            ("/settings", {}, (400, "INVALID_REQUEST")),
            ("", {"action": {"command": "fly"}}, (422, "UNSUPPORTED_MODE")),
            ("", {"action": {"command": "idle"}, "requestId": "mine"}, (400, "INVALID_REQUEST")),
            ("/limit", {"limit": {"value": 10, "unit": "a"}, "ttl": 0},
             (422, "SETTING_OUT_OF_RANGE"))):
        status, _, body = api.call("POST", PATH + path, request)
        assert (status, body["error"]["code"]) == want, (path, request, body)
        assert body["success"] is False and isinstance(body["error"]["details"], dict)
    # The page: HTML from flash, its id escaped, nothing loaded from elsewhere.
    with socket.create_connection(("127.0.0.1", api.port), 5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        page = b""
        while True:
            got = s.recv(65536)
            if not got:
                break
            page += got
    head, _, html = page.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"text/html" in head
    assert b"Content-Security-Policy: default-src 'none'" in head
    assert b'data-id="%s"' % DEVICE.encode() in html and b"</html>" in html
    assert not re.search(rb"(src|href)=\"?https?:", html)


def test_one_command_slot_for_both_doors(front):
    # A command over HTTP conflicts with one in flight from MQTT, and the reverse (409 with
    # conflictingActionIds); cancel_and_replace replaces it; queue_after is 422; GET
    # /actions/{id} shows what happened to each.
    sim, api, c = front
    plug(sim, obeysPilot=False)  # it keeps drawing: an idle stays in flight for 6 s
    wait_for(lambda: sim.bench.contactor and sim.bench.current > 1, 10)
    assert c.command("idle", actionId="act_mqtt_1")["meta"]["status"] == 202
    status, _, body = api.call("POST", PATH, {"action": {"command": "charge"}})
    assert status == 409 and body["error"]["code"] == "CONFLICT", body
    assert body["error"]["details"]["conflictingActionIds"] == ["act_mqtt_1"]
    status, _, body = api.call("POST", PATH, {"action": {"command": "charge"},
                                              "onConflict": "queue_after"})
    assert status == 422 and body["error"]["code"] == "STRATEGY_NOT_SUPPORTED", body
    assert body["error"]["details"]["supported"] == ["cancel_and_replace"]
    status, _, body = api.call("POST", PATH, {"action": {"command": "idle"},
                                              "onConflict": "cancel_and_replace",
                                              "actionId": "act_http_1"})
    assert status == 202 and body["data"]["state"] == "acknowledged", body
    assert api.call("GET", "/actions/act_mqtt_1")[2]["data"]["state"] == "cancelled"
    reply = c.command("charge")  # and the reverse: MQTT meets HTTP's action in flight
    assert reply["meta"]["status"] == 409
    assert reply["error"]["details"]["conflictingActionIds"] == ["act_http_1"]
    status, _, body = api.call("GET", "/actions/act_nobody")
    assert status == 404 and body["error"]["code"] == "ACTION_NOT_FOUND"
    wait_for(lambda: api.call("GET", "/actions/act_http_1")[2]["data"]["state"] == "completed",
             15)


def hostile(api):
    """(name, what is sent, the status wanted or None for a closed socket): every bound and
    syntax rule of the front (docs/http.md, "Hostile input")."""
    auth = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
    post = b"POST " + PATH.encode() + b"/settings HTTP/1.1\r\nHost: x\r\n" + auth
    body = b'{"max_charge_rate": {"value": 1, "unit": "kw"}}'
    return [
        ("request line too long", b"GET /" + b"a" * 600 + b" HTTP/1.1\r\n\r\n", 414),
        ("header line too long", b"GET / HTTP/1.1\r\nX-A: " + b"a" * 600 + b"\r\n\r\n", 431),
        ("too many header lines", b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 40 + b"\r\n", 431),
        ("headers too large", b"GET / HTTP/1.1\r\n" + (b"X-A: " + b"a" * 300 + b"\r\n") * 20
         + b"\r\n", 431),
        ("body too large", post + b"Content-Length: 5000\r\n\r\n" + b"{" * 5000, 413),
        ("unknown method", b"BREW " + PATH.encode() + b" HTTP/1.1\r\n" + auth + b"\r\n", 501),
        ("lower-case method", b"get / HTTP/1.1\r\n\r\n", 400),
        ("method not allowed", b"PUT " + PATH.encode() + b" HTTP/1.1\r\n" + auth + b"\r\n", 405),
        ("DELETE on the page", b"DELETE / HTTP/1.1\r\n\r\n", 405),
        ("HTTP/2", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        ("HTTP/3.0", b"GET / HTTP/3.0\r\n\r\n", 505),
        ("not HTTP (TLS)", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)) +
         b"\r\n\r\n", 400),
        ("NUL in the path", b"GET /\x00 HTTP/1.1\r\n\r\n", 400),
        ("Content-Length not a number", post + b"Content-Length: 12a\r\n\r\n" + body, 400),
        ("Content-Length negative", post + b"Content-Length: -1\r\n\r\n" + body, 400),
        ("Content-Length twice, different", post + b"Content-Length: 5\r\nContent-Length: 6"
         b"\r\n\r\n" + body, 400),
        ("Content-Length huge", post + b"Content-Length: 99999999999999999999\r\n\r\n", 400),
        ("no Content-Length", post + b"\r\n" + body, 411),
        ("chunked", post + b"Transfer-Encoding: chunked\r\n\r\n2f\r\n" + body + b"\r\n0\r\n\r\n",
         411),
        ("folded header", b"GET " + PATH.encode() + b" HTTP/1.1\r\n" + auth + b" folded\r\n\r\n",
         400),
        ("no colon", b"GET / HTTP/1.1\r\nnonsense\r\n\r\n", 400),
        ("Authorization twice", b"GET " + PATH.encode() + b" HTTP/1.1\r\n" + auth + auth +
         b"\r\n", 400),
        ("body not JSON", post + b"Content-Length: 5\r\n\r\nhello", 400),
        ("body deeply nested", post + b"Content-Length: 1500\r\n\r\n" + b"[" * 1500, 400),
        ("body short of its length", post + b"Content-Length: 100\r\n\r\n" + body, 408),
        ("silent", b"", 408),
        ("half a request line", b"GET /ev-char", 408),
        ("closed at once", None, None),
    ]


def test_every_hostile_request_is_refused_and_changes_nothing(front):
    sim, api, c = front
    before = api.read()
    for name, data, want in hostile(api):
        if data is None:  # connect and hang up: nothing to answer
            socket.create_connection(("127.0.0.1", api.port), 5).close()
            continue
        t0 = time.monotonic()
        status, out = api.raw(data)
        assert status == want, (name, out[:300])
        assert time.monotonic() - t0 < 6, name  # 408 within its 3 s
        body = json.loads(out.partition(b"\r\n\r\n")[2])
        assert body["success"] is False and body["meta"]["requestId"].startswith("req_"), name
    # No token, a wrong one, another scheme: 401, before the device or the body is looked at.
    for token in (None, "wrong-token-0123456789", TOKEN[:-1], TOKEN + "x"):
        status, headers, body = api.call("POST", PATH + "/settings",
                                         {"max_charge_rate": {"value": 1, "unit": "kw"}},
                                         token=token)
        assert status == 401 and body["error"]["code"] == "UNAUTHORIZED", body
        assert headers["www-authenticate"].startswith("Bearer")
    status, _, body = api.call("GET", PATH, headers={"Authorization": "Basic " + TOKEN},
                               token=None)
    assert status == 401
    assert api.call("GET", "/ev-charger/other", token=None)[0] == 401  # no id leaks
    assert api.call("GET", "/ev-charger/other")[2]["error"]["code"] == "DEVICE_NOT_FOUND"
    assert api.call("GET", "/nowhere")[2]["error"]["code"] == "NOT_FOUND"
    assert api.call("GET", PATH + "/settings")[0] == 405
    after = api.read()
    assert after["settings"] == before["settings"] and after["lastAction"] is None
    assert after["diagnostics"]["flashWrites"] == before["diagnostics"]["flashWrites"]
    assert sim.sim.agent.proc.poll() is None  # still running, and still answering
    assert c.read()["id"] == DEVICE


def test_slow_and_many_clients_hold_the_front_for_seconds_only(front):
    # A slowloris is cut off 3 s after its accept (408); a client beside it waits at most
    # that long. Idle connections take the 4 waiting places; one more is answered 503 at
    # once; MQTT is never held up by any of it.
    sim, api, c = front
    slow = threading.Thread(target=lambda: results.append(
        api.raw([b"GET " + PATH.encode() + b" HTTP/1.1\r\n"] + [b"X-A: 1\r\n"] * 20, 0.5)))
    results = []
    slow.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    assert api.call("GET", PATH)[0] == 200
    waited = time.monotonic() - t0
    slow.join(15)
    assert results and results[0][0] == 408, results
    assert waited < 4, waited
    idle = [socket.create_connection(("127.0.0.1", api.port), 5) for _ in range(4)]
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        status, out = api.raw(b"GET " + PATH.encode() + b" HTTP/1.1\r\n\r\n")
        assert status == 503 and b"Retry-After: 1" in out, out[:200]
        assert time.monotonic() - t0 < 1
        t0 = time.monotonic()
        assert c.read()["id"] == DEVICE  # MQTT answers meanwhile
        assert time.monotonic() - t0 < 1
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: api.call("GET", PATH)[0] == 200, 10)
    burst = []
    threads = [threading.Thread(target=lambda: burst.append(api.raw(
        b"GET " + PATH.encode() + b" HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() +
        b"\r\n\r\n")[0])) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(burst) == 30 and set(burst) <= {200, 503} and 200 in burst, burst
    assert sim.sim.agent.proc.poll() is None


def test_a_cap_written_over_http_survives_a_power_cut_at_once(front):
    # Issue 29's rule through this door too: a 200 means the cap is in flash, so a power cut
    # the moment the answer is in comes back at it (a raise after a lower cap, no pause).
    sim, api, c = front
    for kw in (1, 5):
        status, _, body = api.call("POST", PATH + "/settings",
                                   {"max_charge_rate": {"value": kw, "unit": "kw"}})
        assert status == 200, body
    c.power(False)
    c.wait(lambda: c.readings and c.readings["power_on"] is False, 5)
    c.availability = None
    c.power(True)
    online(c)
    assert api.read()["settings"]["max_charge_rate"]["value"] == 5


def many_keys(limit):
    """A settings map of as many distinct unknown keys as fit in `limit` bytes of JSON."""
    keys, size = [], 2
    while size + len(json.dumps({"%x" % len(keys): 0})) < limit:
        keys.append("%x" % len(keys))
        size += len(json.dumps({keys[-1]: 0}))
    return dict.fromkeys(keys, 0)


def test_a_write_naming_hundreds_of_settings_is_refused_without_a_heap_of_errors(front):
    # A 2 KB map of ~290 unknown keys (one small object: within every bound of the front)
    # made one error record per key: at the ESP32's 56 KB heap a MemoryError, answered 500
    # INTERNAL_ERROR with the heap run dry under the other threads. A map names at most as
    # many keys as the charger has settings; more is a refusal that costs nothing.
    sim, api, c = front
    before = api.read()
    status, _, body = api.call("POST", PATH + "/settings", json.dumps(many_keys(2040)).encode())
    assert (status, body["error"]["code"]) == (400, "INVALID_REQUEST"), body
    reply = c.request("settings", {"settings": many_keys(1990)})  # the same over MQTT
    assert (reply["meta"]["status"], reply["error"]["code"]) == (400, "INVALID_REQUEST"), reply
    # Five keys, each a setting the charger has: still judged key by key.
    status, _, body = api.call("POST", PATH + "/settings", {
        "max_charge_rate": {"value": 1, "unit": "kw"}, "failsafe_charge_rate": {"value": 99,
                                                                                "unit": "kw"},
        "max_current": {"value": 1, "unit": "a"}, "supply_voltage": {"value": 1, "unit": "v"},
        "phases": {"value": 1, "unit": "phases"}})
    assert status == 422 and len(body["error"]["details"]["errors"]) == 4, body
    after = api.read()
    assert after["settings"] == before["settings"]
    assert sim.sim.agent.proc.poll() is None


@pytest.mark.parametrize("uplinks", [["http"], ["mqtt", "http"]])
def test_a_charger_without_a_broker_takes_every_command(tmp_path, uplinks):
    # A charger on HTTP (or OCPP) alone has no uplink that publishes events. Each action's
    # end still waited in the outbox for a publisher that never came, so after the fourth
    # the slot's gate said 429 TOO_MANY_REQUESTS to every command, for good (a restart
    # kept them in the journal). Without a publisher nothing waits; with MQTT the events
    # are published as before. CPython's rig (a micropython rig with uplinks runs them,
    # sim_main.py): under micropython it is the ESP32 board's test below.
    rig = InProcessRig(str(tmp_path), uplinks=uplinks)
    try:
        plug_rig(rig)
        for i in range(5):  # the fifth was the first refused
            reply = rig.command(("idle", "charge")[i % 2], actionId="act_%d" % i)
            assert reply["meta"]["status"] == 202, (i, reply)
            rig.run(3000)  # it ends (the vehicle follows the pilot)
        rig.power_cut()
        rig.boot()
        assert rig.command("idle")["meta"]["status"] == 202
        ended = [e for e in rig.events() if e["type"].startswith("push.")]
        assert len(ended) == (5 if "mqtt" in uplinks else 0), ended
    finally:
        rig.close()


def test_the_esp32_board_on_http_alone_takes_every_command(tmp_path, mpy_dir):
    # The same on the ESP32 board module (its main, runner and threads, with the stand-ins
    # of test_esp32_board), the HTTP front its only uplink: before, commands 1-4 were 202
    # and every one after them 429 TOO_MANY_REQUESTS.
    from test_esp32_board import boot, config, stop
    port = free_port()
    cfg = config(None, uplinks=["http"], http={"token": TOKEN, "port": port,
                                               "host": "127.0.0.1"})
    del cfg["broker"]
    proc, _ = boot(tmp_path, cfg, ev="B")
    api = HttpApi(port, TOKEN, "esp-1")
    try:
        wait_for(lambda: _answers(api), 30)
        for i in range(6):
            status, _, body = api.call("POST", api.path, {
                "action": {"command": ("idle", "charge")[i % 2]},
                "onConflict": "cancel_and_replace"})
            assert status == 202, (i, body)
            time.sleep(1)  # it ends
    finally:
        stop(proc)


def _answers(api):
    try:
        return api.call("GET", api.path, timeout=2)[0] == 200
    except OSError:
        return False
