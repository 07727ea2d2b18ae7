"""evctl as a person runs it: every mistake is one clear line and a non-zero exit status,
concurrent runs never see each other's replies, and the output is meant to be read."""
import concurrent.futures
import io
import json
import os
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest

from e2e import Charger, launched
from tools.bench.broker import free_port
from tools.evctl import WatchLine
from tools.paths import ROOT

EVCTL = os.path.join(ROOT, ".venv", "bin", "evctl")


def evctl(*args, broker=None, cwd=ROOT, timeout=60):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("EVSE_BROKER", None)
    env.pop("EVSE_DEVICE", None)
    if broker:
        env["EVSE_BROKER"] = broker
    return subprocess.run([sys.executable, "-m", "tools.evctl", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_error(r, code, *words):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, r
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def sim(module_broker, tmp_path_factory, mpy_dir):
    """make sim's launcher on the broker make sim would pick, charger-1 online."""
    with launched(module_broker, tmp_path_factory.mktemp("flash")):
        yield module_broker.address


@pytest.mark.parametrize("args,words", [
    (["--broker", "localhost", "read"], ["'localhost' is not HOST:PORT"]),
    (["--broker", "127.0.0.1:70000", "read"], ["is not HOST:PORT"]),
    (["read"], ["no broker", "EVSE_BROKER"]),
    (["--broker", "127.0.0.1:1883", "cap", "abc"], ["'abc' is not a power in kW"]),
    (["--broker", "127.0.0.1:1883", "cap", "nan"], ["'nan' is not a power in kW"]),
    (["--broker", "127.0.0.1:1883", "cap"], ["required: KW"]),
    (["--broker", "127.0.0.1:1883", "ev", "connected"], ["write NAME=VALUE"]),
    (["--broker", "127.0.0.1:1883", "ev", "connected=yes"], ["true or false"]),
    (["--broker", "127.0.0.1:1883", "ev", "plugged=true"], ["unknown vehicle field"]),
    (["--broker", "127.0.0.1:1883", "ev", "maxCurrent=lots"], ["a number of amps"]),
    (["--broker", "127.0.0.1:1883", "ev", "maxCurrent=" + "[" * 4000], ["a number of amps"]),
    # Numbers the bench would ignore (before: exit 0 and "bench charger-1: ev ..."), refused
    # by the bench's own rule (tools/bench/bench.py's EV_FIELDS).
    (["--broker", "127.0.0.1:1883", "ev", "maxCurrent=1e999"],
     ["maxCurrent must be a number of amps from 0 to 80, not '1e999'"]),
    (["--broker", "127.0.0.1:1883", "ev", "maxCurrent=200000"], ["from 0 to 80, not '200000'"]),
    (["--broker", "127.0.0.1:1883", "ev", "maxCurrent=NaN"], ["from 0 to 80, not 'NaN'"]),
    (["--broker", "127.0.0.1:1883", "ev", "followMs=-1"],
     ["followMs must be a number of ms from 0 to 60000, not '-1'"]),
    (["--broker", "127.0.0.1:1883", "--timeout", "nan", "read"], ["not a number of seconds"]),
    (["--broker", "127.0.0.1:1883", "--timeout", "-1", "read"], ["not a number of seconds"]),
    (["--broker", "127.0.0.1:1883", "power"], ["required: on|off"]),
    (["--broker", "127.0.0.1:1883", "power", "of"], ["invalid choice: 'of'"]),
    (["--broker", "127.0.0.1:1883", "fault", "bogus"], ["invalid choice: 'bogus'"]),
    (["--broker", "127.0.0.1:1883", "meter", "gauge", "crc"], ["invalid choice: 'gauge'"]),
    (["--broker", "127.0.0.1:1883", "meter", "ev", "noise"], ["invalid choice: 'noise'"]),
    (["--broker", "127.0.0.1:1883", "meter", "ev"], ["required: fault"]),
    (["--broker", "127.0.0.1:1883", "boost"], ["invalid choice: 'boost'"]),
    (["--broker", "127.0.0.1:1883", "limit", "lots"], ["'lots' is not a limit"]),
    (["--broker", "127.0.0.1:1883", "phases", "2"], ["invalid choice: '2'"]),
    (["--broker", "127.0.0.1:1883", "limit", "10", "--ttl", "soon"], ["invalid int value"]),
])
def test_a_bad_argument_is_one_line_and_status_2(args, words):
    one_error(evctl(*args), 2, *words)


def test_no_broker_there_is_one_line_and_status_3():
    port = free_port()  # nothing listens on it
    one_error(evctl("--broker", "127.0.0.1:%d" % port, "status"), 3,
              "cannot reach the broker at 127.0.0.1:%d (connection refused)" % port)


def test_a_charger_never_seen_or_offline_is_named(sim):
    one_error(evctl("--device-id", "charger-2", "read", broker=sim), 3,
              "charger-2 was never seen on " + sim)
    host, port = sim.rsplit(":", 1)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect(host, int(port))
    c.loop_start()
    c.publish("ev-charger/gone-1/availability", "offline", qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()
    one_error(evctl("--device-id", "gone-1", "cap", "7", broker=sim), 3, "gone-1 is offline")
    # Bench commands reach make sim's bench only: without one, nothing answers.
    one_error(evctl("--device-id", "charger-2", "ev", "connected=true", broker=sim), 3,
              "no bench answered for charger-2")


def test_a_refusal_is_one_line_and_status_1(sim):
    line = one_error(evctl("cap", "51", broker=sim), 1, "422", "SETTING_OUT_OF_RANGE")
    assert "cap refused by charger-1" in line
    # A charger without a second contactor (no phase_switch) cannot switch phases.
    line = one_error(evctl("phases", "1", broker=sim), 1, "422", "UNSUPPORTED_SETTING")
    assert "cannot switch phases" in line


def test_an_update_that_cannot_be_sent_or_is_refused_is_one_line(sim, tmp_path):
    url = "http://127.0.0.1:%d/app.tar" % free_port()  # nothing serves it
    one_error(evctl("update", url, "--release", str(tmp_path / "none.json"), broker=sim), 2,
              "cannot read the release file")
    (tmp_path / "bad.json").write_text("{}")
    one_error(evctl("update", url, "--release", str(tmp_path / "bad.json"), broker=sim), 2,
              "is not a release file")
    one_error(evctl("update", url, broker=sim), 3, "cannot fetch the release file " + url +
              ".ota.json")
    # A real release, but make sim's charger here holds no update keys: the charger's 422.
    from tools import ota
    (tmp_path / "app.tar").write_bytes(bytes(512))
    key = ota.rsa.generate_private_key(public_exponent=65537, key_size=3072)
    (tmp_path / "app.json").write_text(json.dumps(ota.release(key, str(tmp_path / "app.tar"),
                                                              "9.0.0", "bundle")))
    line = one_error(evctl("update", url, "--release", str(tmp_path / "app.json"),
                           broker=sim), 1, "422", "UPDATE_REFUSED", "holds no update keys")
    assert "update refused by charger-1" in line


@pytest.mark.parametrize("value", ["1e999", "200000"])
def test_a_vehicle_value_the_bench_ignores_is_refused_not_reported_done(sim, value):
    # Before: exit 0 and "bench charger-1: ev maxCurrent=..." while the bench ignored it.
    one_error(evctl("ev", "maxCurrent=" + value, broker=sim), 2,
              "maxCurrent must be a number of amps from 0 to 80")


def test_replies_reach_the_run_that_asked(sim):
    def read(_):
        r = evctl("read", broker=sim)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["meta"]["requestId"]

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        ids = list(pool.map(read, range(5)))
    assert len(set(ids)) == 5, ids


def test_drive_the_bench_and_the_charger(sim):
    r = evctl("ev", "connected=true", "request=true", "maxCurrent=16", broker=sim)
    assert r.returncode == 0 and "bench charger-1: ev" in r.stdout, r.stderr
    assert evctl("cap", "7.4", broker=sim).returncode == 0
    c = Charger(sim)
    try:
        c.wait(lambda: c.states and c.states[-1]["data"]["state"]["status"] == "charging", 15)
    finally:
        c.close()
    r = evctl("status", broker=sim)
    assert r.returncode == 0, r.stderr
    screen = r.stdout
    assert screen.startswith("charger-1 on %s: online" % sim)
    for row in ("status        charging (pilot C, contactor closed)",
                "3.68 kW now, 32 A offered", "cap           7.4 kW (max_charge_rate)",
                "last action   none"):
        assert row in screen, screen
    r = evctl("cap", "1.0", broker=sim)  # below 6 A: accepted, and it says what follows
    assert r.returncode == 0 and "note: " in r.stdout and "suspended" in r.stdout, r.stdout
    r = evctl("idle", "--action-id", "act_cli_1", broker=sim)
    assert r.returncode == 0 and r.stdout.strip() == "idle: acknowledged (act_cli_1)"
    assert evctl("cap", "7.4", broker=sim).returncode == 0
    r = evctl("charge", broker=sim)  # the idle is still in flight: a conflict, status 1
    if r.returncode:
        one_error(r, 1, "409 CONFLICT")
    r = evctl("charge", "--replace", broker=sim)
    assert r.returncode == 0 and r.stdout.startswith("charge: acknowledged"), r.stderr
    r = evctl("fault", "none", broker=sim)
    assert r.returncode == 0, r.stderr


def test_a_bench_meter_fault_from_the_cli(sim, module_broker, tmp_path):
    # make sim's bench without Modbus meters says so: no message goes unanswered.
    r = evctl("meter", "ev", "crc", broker=sim)
    assert r.returncode == 1 and r.stderr.strip() == (
        "evctl: the bench of charger-1 has no ev meter (make sim --ev-meter MODEL)"), r
    with launched(module_broker, tmp_path / "flash", "--ev-meter", "B23", device_id="metered"):
        r = evctl("--device-id", "metered", "meter", "ev", "silent", broker=sim)
        assert r.returncode == 0 and r.stdout.strip() == "bench metered: meter ev silent", r
        c = Charger(sim, "metered")
        try:  # the charger's own read: the meter lost, and why
            c.wait(lambda: (c.read().get("meters") or {}).get("ev", {}).get("status") ==
                   "lost", 15)
        finally:
            c.close()
        screen = evctl("--device-id", "metered", "status", broker=sim).stdout
        assert "ev meter      B23 at 11: lost" in screen and "(last timeout)" in screen, screen
        assert evctl("--device-id", "metered", "meter", "ev", "none", broker=sim).returncode == 0
        r = evctl("--device-id", "metered", "meter", "mains", "crc", broker=sim)
        assert r.returncode == 1 and "has no mains meter" in r.stderr, r


def test_a_dynamic_limit_from_the_cli(sim):
    r = evctl("limit", "10", "--ttl", "90", broker=sim)
    assert r.returncode == 0 and r.stdout.startswith("limit: 10 A until 20"), r.stdout + r.stderr
    c = Charger(sim)
    try:
        read = c.read()
        assert read["state"]["limits"]["dynamic"]["source"] == "evctl"
        assert read["state"]["limits"]["dynamic"]["value"] == 10
    finally:
        c.close()
    one_error(evctl("limit", "10", "--ttl", "4000", broker=sim), 1, "422")
    r = evctl("limit", "clear", broker=sim)
    assert r.returncode == 0 and r.stdout.strip() == "limit: cleared", r.stdout + r.stderr
    c = Charger(sim)
    try:
        assert c.read()["state"]["limits"]["dynamic"] is None
    finally:
        c.close()


def test_the_venv_command_works_outside_the_repository(sim, tmp_path):
    assert os.path.exists(EVCTL), "make test creates .venv/bin/evctl"
    env = dict(os.environ, EVSE_BROKER=sim)
    env.pop("PYTHONPATH", None)
    r = subprocess.run([EVCTL, "status"], cwd=str(tmp_path), env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "charger-1 on" in r.stdout, r.stderr


def test_watch_prints_one_line_per_change_and_raw_json(sim):
    def watch(*extra):
        return subprocess.Popen([sys.executable, "-m", "tools.evctl", "watch", *extra],
                                cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT,
                                                   EVSE_BROKER=sim),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    people, raw = watch(), watch("--raw")
    try:
        time.sleep(2)
        assert evctl("cap", "3.68", broker=sim).returncode == 0
        assert evctl("cap", "7.4", broker=sim).returncode == 0
        time.sleep(2)
    finally:
        for p in (people, raw):
            p.send_signal(2)  # Ctrl-C: a clean end, status 0
    out, err = people.communicate(timeout=10)
    assert people.returncode == 0 and not err, err
    lines = out.strip().splitlines()
    assert any(" cap 3.68 kW, limited by max_charge_rate " in line for line in lines), out
    assert all(a[9:] != b[9:] for a, b in zip(lines, lines[1:]))  # a line only on a change
    assert all(len(line) < 160 for line in lines)
    out, _ = raw.communicate(timeout=10)
    assert any(line.startswith("ev-charger/charger-1/state {") for line in out.splitlines())


def test_json_nested_too_deep_stops_neither_a_client_nor_watch(sim):
    # json.loads raises RecursionError (no ValueError) for 4,000 "[": before, such a message
    # ended the client's MQTT thread (the read below timed out), and a watch with it.
    c = Charger(sim)
    try:
        c.client.publish(c.base + "events", b"[" * 4000, qos=1).wait_for_publish(5)
        assert c.read()["id"] == "charger-1"
    finally:
        c.close()
    out = io.StringIO()
    w = WatchLine("charger-1", out)
    w.update("state", "[" * 4000)
    w.update("events", "[" * 4000)
    assert out.getvalue() == ""


def test_watch_lines_are_rounded_for_people():
    out = io.StringIO()
    w = WatchLine("charger-1", out)
    state = {"data": {"state": {"status": "charging", "currentPower": 7.3591234,
                                "limitedBy": "max_current", "offeredCurrent": 32.0,
                                "sessionEnergy": 1.23456, "fault": None},
                      "settings": {"max_charge_rate": {"value": 7.4}}}}
    w.update("state", json.dumps(state))
    w.update("state", json.dumps(state))  # the same again: no new line
    w.update("events", json.dumps({"type": "push.completed", "data": {"actionId": "act_9"}}))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0][9:] == ("charging       7.36 kW  cap 7.4 kW, limited by max_current  "
                            "offered 32 A  session 1.23 kWh  | -")
    assert lines[1].endswith("| push.completed act_9")
