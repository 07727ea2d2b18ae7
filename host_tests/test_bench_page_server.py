"""The bench page's server without a browser: its API answers with the charger's reply,
refuses what is not its own page's, checks bench messages, pushes the whole picture first;
make sim's --page-port and --no-page."""
import json
import socket
import urllib.error
import urllib.request
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest

from e2e import Charger, exited, launch, online, stop
from tools.bench.broker import free_port
from tools.bench.page.server import PageServer, ceilings


@pytest.fixture(scope="module")
def page(module_broker, tmp_path_factory, mpy_dir):
    port = free_port()
    proc = launch(module_broker, tmp_path_factory.mktemp("flash"), "--page-port", str(port))
    c = Charger(module_broker.address)
    try:
        online(c)
    finally:
        c.close()
    yield "http://127.0.0.1:%d" % port
    code, out = stop(proc)
    assert code == 0 and "sim: stopped" in out, out


def post(url, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_a_request_gets_the_chargers_matching_reply(page):
    code, answer = post(page + "/api/charger-1/settings",
                        {"settings": {"max_charge_rate": {"value": 60, "unit": "kw"}}})
    assert code == 200 and answer["ok"] is False
    assert answer["message"] == ("422 SETTING_OUT_OF_RANGE: max_charge_rate: value outside "
                                 "[0, 50] kw")
    assert answer["reply"]["meta"]["requestId"].startswith("page-")
    code, answer = post(page + "/api/charger-1/read", {"requestId": "mine"})
    assert answer["ok"] and answer["message"] == "200 OK"
    assert answer["reply"]["meta"]["requestId"] != "mine"  # the server's own, unique
    assert answer["reply"]["data"]["id"] == "charger-1"


@pytest.mark.parametrize("path,body,headers,code,words", [
    ("/api/charger-1/read", {}, {"Content-Type": "application/json", "Host": "evil.example"},
     403, "not a local page"),
    ("/api/charger-1/read", {}, {"Content-Type": "application/json",
                                 "Origin": "http://evil.example"}, 403, "not a local page"),
    ("/api/charger-1/read", {}, {"Content-Type": "text/plain"}, 415, "application/json"),
    ("/api/charger-1/read", b"[1]", None, 400, "a JSON object"),
    ("/api/charger-1/read", b"{nope", None, 400, "a JSON object"),
    ("/api/charger-1/read", b"[" * 4000, None, 400, "a JSON object"),  # before: no reply
    ("/api/charger-1/read", b"x" * 5000, None, 400, "0-4096 bytes"),
    ("/api/charger-1/reboot", {}, None, 404, "no such request"),
    ("/api/charger-9/read", {}, None, 200, "unknown charger 'charger-9'"),
    ("/api/charger-1/ev", {"connected": "yes"}, None, 200, "connected must be true or false"),
    ("/api/charger-1/ev", {"plugged": True}, None, 200, "unknown vehicle field 'plugged'"),
    ("/api/charger-1/ev", {"maxCurrent": 1e9}, None, 200, "a number of amps from 0 to 80"),
    ("/api/charger-1/ev", {"followMs": 1e9}, None, 200, "a number of ms from 0 to 60000"),
    ("/api/charger-1/fault", {"fault": "bogus"}, None, 200, "fault must be one of none, "),
    ("/api/charger-1/power", {"on": 1}, None, 200, "power takes"),
    ("/api/charger-1/meter", {"meter": "ev"}, None, 200, "meter takes"),
    ("/api/charger-1/meter", {"meter": "gauge", "fault": "crc"}, None, 200,
     "no 'gauge' meter on this bench"),
    ("/api/charger-1/meter", {"meter": "ev", "fault": "noise"}, None, 200,
     "unknown meter fault 'noise' (known: crc, silent, address, exception, none)"),
    # A good one to a bench without Modbus meters: its readings say so.
    ("/api/charger-1/meter", {"meter": "ev", "fault": "crc"}, None, 200,
     "the bench of charger-1 has no ev meter (make sim --ev-meter MODEL)"),
])
def test_what_is_not_the_pages_own_request_is_refused_with_one_message(page, path, body,
                                                                       headers, code, words):
    got, answer = post(page + path, body, headers)
    assert got == code and answer["ok"] is False and words in answer["message"], answer


def test_json_nested_too_deep_on_any_topic_stops_neither_the_page_nor_the_bench(page,
                                                                               module_broker):
    # json.loads raises RecursionError (no ValueError) for 4,000 "[": before, each such
    # message ended the page's or the bench's MQTT thread, and the page's next control
    # waited for readings that never came.
    host, port = module_broker.address.rsplit(":", 1)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect(host, int(port))
    c.loop_start()
    try:
        for topic in ("ev-charger/charger-1/state", "ev-charger/charger-1/events",
                      "ev-charger/charger-1/responses", "bench/charger-1/readings",
                      "bench/charger-1/ev", "bench/charger-1/fault", "bench/charger-1/power"):
            c.publish(topic, b"[" * 4000, qos=1).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()
    assert post(page + "/api/charger-1/ev", {"maxCurrent": 21}) == (
        200, {"ok": True, "message": "bench: ev maxCurrent=21"})
    stream, messages = pushes(page)
    with stream:  # the bench took it: its readings say so
        hello = next(messages)["chargers"]["charger-1"]["readings"]
        if hello["ev"]["maxCurrent"] != 21:
            next(m for m in messages if m["type"] == "readings" and
                 m["body"]["ev"]["maxCurrent"] == 21)
    assert post(page + "/api/charger-1/read", {})[1]["ok"]


def test_only_the_pages_own_files_are_served(page):
    with urllib.request.urlopen(page + "/", timeout=5) as r:
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        assert b'<canvas id="scope"' in r.read()
    for path in ("/../server.py", "/static/page.js", "/etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(page + path, timeout=5)
        assert e.value.code == 404


def pushes(url):
    stream = urllib.request.urlopen(url + "/events", timeout=10)
    assert stream.headers["Content-Type"] == "text/event-stream"
    return stream, (json.loads(line[5:]) for line in stream if line.startswith(b"data:"))


def test_the_stream_starts_with_the_whole_picture_then_pushes_changes(page):
    stream, messages = pushes(page)
    with stream:
        hello = next(messages)
        assert hello["type"] == "hello" and hello["devices"] == ["charger-1"]
        c = hello["chargers"]["charger-1"]
        assert c["availability"] == "online" and c["state"]["id"] == "charger-1"
        assert post(page + "/api/charger-1/ev", {"maxCurrent": 20})[1]["ok"]
        for push in messages:
            if push["type"] == "readings" and push["body"]["ev"]["maxCurrent"] == 20:
                assert push["device"] == "charger-1" and "offered" in push["sample"]
                break
    stream, messages = pushes(page)  # a page opened now gets what the first one saw
    with stream:
        c = next(messages)["chargers"]["charger-1"]
        assert c["readings"]["ev"]["maxCurrent"] == 20
        assert c["history"][-1]["t"] >= push["sample"]["t"]


def test_an_offline_charger_is_named_at_once(page):
    with urllib.request.urlopen(page + "/events", timeout=10) as stream:
        assert post(page + "/api/charger-1/power", {"on": False})[1]["message"] == \
            "bench: power on=false"
        try:
            for line in stream:  # until the server has the charger's last will
                if line.startswith(b"data:") and json.loads(line[5:]).get("body") == "offline":
                    break
            answer = post(page + "/api/charger-1/read", {})[1]
            assert answer == {"ok": False,
                              "message": "charger-1 is offline: power it on first"}, answer
        finally:
            assert post(page + "/api/charger-1/power", {"on": True})[1]["ok"]
        for line in stream:
            if line.startswith(b"data:") and json.loads(line[5:]).get("body") == "online":
                break


def test_ceilings_are_read_in_amps_at_the_installations_voltage():
    state = {"state": {"offeredCurrent": 6.0, "limits": {
                 "maxChargeRate": {"value": 11, "unit": "kw"}, "failsafe": True,
                 "dynamic": None, "site": {"share": 6.5, "fallback": False}}},
             "settings": {"supply_voltage": {"value": 230}, "phases": {"value": 3},
                          "max_current": {"value": 16},
                          "failsafe_charge_rate": {"value": 4.14, "unit": "kw"}}}
    assert ceilings(state) == {"offered": 6.0, "cap": 15.94, "dynamic": None,
                               "failsafe": 6.0, "site": 6.5, "maxCurrent": 16}
    assert ceilings(None)["cap"] is None


def test_a_page_port_in_use_is_one_clear_line_and_no_page_serves_none(module_broker, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = launch(module_broker, tmp_path / "a", "--device-id", "page-a", "--page-port",
                      str(port))
        code, out = exited(proc, 60)  # it refuses and ends by itself: no Ctrl-C racing its exit
    assert code == 1 and "Traceback" not in out, out
    assert ("sim: error: cannot serve the page on 127.0.0.1:%d (Address already in use): "
            "choose another with --page-port N" % port) in out
    proc = launch(module_broker, tmp_path / "b", "--device-id", "page-b", "--no-page")
    code, out = stop_after(proc, "# plug in a car")
    assert code == 0 and "sim: page" not in out, out


def stop_after(proc, text):
    out = ""
    while text not in out:
        line = proc.stdout.readline()
        if not line:
            break
        out += line
    if proc.poll() is None:
        code, rest = stop(proc)
        return code, out + rest
    rest = proc.stdout.read()
    stop(proc)
    return proc.returncode, out + rest


def test_a_resent_event_is_shown_once_and_every_page_gets_each_push():
    # No network: the server's MQTT side fed by hand, two pages' queues read back.
    server = PageServer("127.0.0.1:1", ["charger-1"])
    pages = [server.hello(), server.hello()]
    for q in pages:
        assert json.loads(q.get_nowait()[5:])["type"] == "hello"
    event = {"id": "evt_1", "type": "push.completed", "timestamp": None, "data": {}}
    for _ in range(2):  # at least once: the same id again after a power cut
        server._on_message(None, None, SimpleNamespace(
            topic="ev-charger/charger-1/events", payload=json.dumps(event).encode()))
    server._on_message(None, None, SimpleNamespace(topic="ev-charger/charger-9/events",
                                                   payload=json.dumps(event).encode()))
    for q in pages:
        push = json.loads(q.get_nowait()[5:])
        assert push == {"type": "events", "device": "charger-1", "body": event}
        assert q.empty()
    assert list(server.chargers["charger-1"].events) == [event]


def test_an_offline_chargers_stale_state_is_not_plotted():
    server = PageServer("127.0.0.1:1", ["charger-1"])
    feed = lambda topic, body: server._on_message(None, None, SimpleNamespace(  # noqa: E731
        topic=topic, payload=body if isinstance(body, bytes) else json.dumps(body).encode()))
    feed("ev-charger/charger-1/state", {"data": {"state": {"offeredCurrent": 16.0, "limits": {
        "maxChargeRate": {"value": 3.68, "unit": "kw"}}}, "settings": {
        "supply_voltage": {"value": 230}, "phases": {"value": 1}, "max_current": {"value": 32}}}})
    readings = {"current": 16.0, "power": 3.68, "power_on": True}
    samples = []
    for availability in (b"online", b"offline"):
        feed("ev-charger/charger-1/availability", availability)
        feed("bench/charger-1/readings", readings)
        samples.append(server.chargers["charger-1"].history[-1])
    assert samples[0]["on"] and samples[0]["offered"] == 16.0 and samples[0]["cap"] == 16.0
    assert not samples[1]["on"] and samples[1]["offered"] is None and samples[1]["cap"] is None
    assert samples[1]["current"] == 16.0 and samples[1]["maxCurrent"] == 32


def site_readings(household, currents, meter=True):
    return {"t": 5000, "currents": currents, "fuse": 25, "overFuse": False,
            "household": household, "meter": meter,
            "chargers": {"charger-1": {"current": 11.0, "offered": 11.0, "powerOn": True,
                                       "phases": [1]},
                         "charger-2": {"current": 0.0, "offered": 6.0, "powerOn": True,
                                       "phases": [2]}}}


def test_site_readings_are_kept_and_pushed_as_one_flat_sample():
    server = PageServer("127.0.0.1:1", ["charger-1", "charger-2"], site=("home", 3))
    feed = lambda topic, body: server._on_message(None, None, SimpleNamespace(  # noqa: E731
        topic=topic, payload=body if isinstance(body, bytes) else json.dumps(body).encode()))
    q = server.hello()
    hello = json.loads(q.get_nowait()[5:])
    assert hello["site"] == {"id": "home", "phases": 3, "readings": None, "history": []}
    r = site_readings([2.0, 4.0, 0.0], [13.0, 4.0, 0.0], meter=False)
    feed("bench/site/home/readings", r)
    for junk in (b"{nope", b"[1]", json.dumps({"currents": 3}).encode()):
        feed("bench/site/home/readings", junk)  # not the site bench's: nothing to draw
    feed("bench/site/away/readings", r)  # another site's: not this page's
    push = json.loads(q.get_nowait()[5:])
    assert q.empty()
    assert push["type"] == "site" and push["body"] == r
    sample = dict(push["sample"])
    assert type(sample.pop("t")) is int
    assert sample == {"on": False, "fuse": 25, "L1": 13.0, "L2": 4.0, "L3": 0.0,
                      "current:charger-1": 11.0, "offered:charger-1": 11.0,
                      "current:charger-2": 0.0, "offered:charger-2": 6.0}
    assert server.site.readings == r and list(server.site.history) == [push["sample"]]
    assert PageServer("127.0.0.1:1", ["charger-1"]).site is None  # no site: no site view


@pytest.mark.parametrize("name,body,words", [
    ("household", {}, 'household takes {"currents": [L1, L2, L3]}'),
    ("household", {"currents": [1, 2, 3, 4]}, "a list of up to 3 currents"),
    ("household", {"currents": [-1]}, "-1 is not a current from 0 to 1000 A"),
    ("household", {"currents": "lots"}, "a list of up to 3 currents"),
    ("household", {"currents": [1], "x": 1}, 'household takes'),
    ("meter", {"on": 0}, 'meter takes {"on": true | false}'),
    ("meter", {}, 'meter takes'),
])
def test_a_bad_site_control_is_refused_before_it_reaches_the_bench(name, body, words):
    server = PageServer("127.0.0.1:1", ["charger-1"], site=("home", 3))  # no MQTT client:
    answer = server.site_request(name, body)  # a publish would raise
    assert answer["ok"] is False and words in answer["message"], answer
    assert PageServer("127.0.0.1:1", ["charger-1"]).site_request("meter", {"on": True}) == {
        "ok": False, "message": "no site on this bench (make sim --site-fuse A)"}


def test_a_site_control_is_answered_with_the_readings_that_show_it(module_broker, tmp_path,
                                                                   mpy_dir):
    port = free_port()
    proc = launch(module_broker, tmp_path / "flash", "--chargers", "2", "--site-fuse", "25",
                  "--site-phases", "3", "--page-port", str(port))
    url = "http://127.0.0.1:%d" % port
    try:
        for line in proc.stdout:  # the page serves before the chargers boot
            if line.startswith("sim: page"):
                break
        stream, messages = pushes(url)
        with stream:
            assert next(messages)["site"]["phases"] == 3
            assert next(m for m in messages if m["type"] == "site")["body"]["fuse"] == 25
        code, answer = post(url + "/api/site/household", {"currents": [9, None, 2.5]})
        assert code == 200 and answer["ok"], answer
        r = answer["readings"]
        assert r["household"] == [9.0, 0.0, 2.5] and r["currents"][0] >= 9.0
        assert answer["message"].startswith("site bench: household L1 9 A, L2 0 A, L3 2.5 A; "
                                            "the meter reads L1 ")
        assert answer["message"].endswith(" against the 25 A fuse")
        code, answer = post(url + "/api/site/meter", {"on": False})
        assert answer["ok"] and answer["readings"]["meter"] is False
        assert answer["message"] == ("site bench: meter silenced (each charger falls back "
                                     "after its meter timeout)")
        assert post(url + "/api/site/meter", {"on": True})[1]["message"] == \
            "site bench: meter back on"
        assert post(url + "/api/site/reboot", {})[0] == 404
    finally:
        code, out = stop(proc)
    assert code == 0 and "sim: ignored" not in out, out


def test_a_site_control_on_a_page_without_a_site_says_so(page):
    assert post(page + "/api/site/household", {"currents": [3]}) == (200, {
        "ok": False, "message": "no site on this bench (make sim --site-fuse A)"})
