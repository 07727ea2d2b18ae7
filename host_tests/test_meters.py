"""Modbus meters (firmware/meters/, docs/meters.md): the RTU master and the meter poll byte
for byte against a fake port (modbus_cases.py), and every model's table against the bench's
meter, a pymodbus server (tools/bench/meter_peer.py), over the simulated board's serial
port: under CPython, the 64-bit wheel's micropython and make unix32's (frozen, 56K heap)."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.register_message import (ReadHoldingRegistersRequest, ReadInputRegistersRequest,
                                           ReadInputRegistersResponse)

from tools.bench.meter_peer import MODELS as PEER_MODELS
from tools.bench.meter_peer import MeterPeer
from tools.paths import micropython

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import meter_models  # noqa: E402
import meter_poll  # noqa: E402
import modbus_cases as cases  # noqa: E402
import modbus_rtu as rtu  # noqa: E402
from meter_driver import Driver  # noqa: E402

FIRMWARE_MODELS = [row[0] for row in meter_models.MODELS]
ADDRESS = 11  # SmartEVSE's advice: meters at 11 and up (1-10 are its own nodes)
# Values every model's resolution holds exactly (B23: 10 Wh, EM340: 100 Wh; Eastron's floats
# round back to them): what the firmware reads must be these, to the unit.
CURRENTS_DA = [125, 32, 161]
POWER_W = -7400  # exported: the sign survives
ENERGY_WH = 1234500


# -- byte for byte, against a fake port

@pytest.mark.parametrize("name,case", cases.CASES, ids=[n[5:] for n, _ in cases.CASES])
def test_cpython(name, case):
    case()


def run_cases(build, heap=None):
    exe, env = micropython(build, extra_dirs=[HERE])
    out = subprocess.run(exe + (["-X", "heapsize=" + heap] if heap else [])
                         + [os.path.join(HERE, "modbus_cases.py")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == [w for name, _ in cases.CASES + cases.MP_CASES
                                  for w in ("ok", name)]


def test_micropython_wheel(mpy_dir):
    run_cases(mpy_dir)


def test_micropython_unix32_frozen(unix32):
    run_cases(unix32, "56K")


def test_the_known_frames_are_what_pymodbus_builds():
    # The cases' literal frames, and every model's reads, against pymodbus's RTU framer: an
    # implementation of the protocol written without this one.
    client, server = FramerRTU(DecodePDU(False)), FramerRTU(DecodePDU(True))
    assert client.buildFrame(ReadHoldingRegistersRequest(
        address=0x6B, count=3, dev_id=17)) == cases.READ_HOLDING_17
    assert client.buildFrame(ReadInputRegistersRequest(
        address=8, count=1, dev_id=17)) == cases.READ_INPUT_17
    assert client.buildFrame(ReadInputRegistersRequest(
        address=6, count=6, dev_id=1)) == cases.SDM630_CURRENTS
    assert server.buildFrame(ReadInputRegistersResponse(
        registers=[0x4148, 0], dev_id=1)) == cases.REPLY_12_5
    assert server.buildFrame(ExceptionResponse(4, 2, device_id=1)) == cases.EXCEPTION_2
    buf = bytearray(8)
    for name, function, _, values in meter_models.MODELS:
        request = {rtu.INPUT: ReadInputRegistersRequest,
                   rtu.HOLDING: ReadHoldingRegistersRequest}[function]
        for start, count, _ in meter_poll._plan(values):
            rtu.request(buf, ADDRESS, function, start, count)
            assert bytes(buf) == client.buildFrame(request(
                address=start, count=count, dev_id=ADDRESS)), name


def test_every_model_has_a_bench_meter():
    # Adding a model is a row in the firmware's table and its map in the bench's meter.
    assert sorted(PEER_MODELS) == sorted(FIRMWARE_MODELS)


# -- against the bench's meter, over the simulated board's serial port

class ProcessDriver:
    """meter_driver.py under a micropython binary, one JSON line each way."""

    def __init__(self, build, heap):
        exe, env = micropython(build, extra_dirs=[HERE])
        self.proc = subprocess.Popen(
            exe + (["-X", "heapsize=" + heap] if heap else [])
            + [os.path.join(HERE, "meter_driver.py")],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)

    def handle(self, cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("the driver died: " + self.proc.stderr.read())
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        assert self.proc.wait(10) == 0, self.proc.stderr.read()


@pytest.fixture(params=["cpython", "wheel", "unix32"])
def bus(request):
    """A factory: bus(model, peer=model, **open) gives (driver, peer) with the bench's meter
    at ADDRESS holding the test values and the firmware's meter opened against it."""
    made = []

    def make(model, peer_model=None, **opts):
        peer = MeterPeer(peer_model or model, ADDRESS).start()
        peer.set(CURRENTS_DA, POWER_W, ENERGY_WH)
        if request.param == "cpython":
            driver = Driver()
        else:
            request.getfixturevalue("mpy_dir" if request.param == "wheel" else "unix32")
            driver = ProcessDriver(request.param, "56K" if request.param == "unix32" else None)
        made.append((driver, peer))
        driver.handle(dict({"op": "open", "port": peer.port, "model": model,
                            "address": ADDRESS}, **opts))
        return driver, peer

    yield make
    for driver, peer in made:
        if isinstance(driver, ProcessDriver):
            driver.close()
        else:
            driver.port.close()
        peer.close()


@pytest.mark.parametrize("model", FIRMWARE_MODELS)
def test_each_model_reads_the_bench_meter(bus, model):
    driver, peer = bus(model)
    s = driver.handle({"op": "poll", "now": 1000})
    phases = 1 if model == "SDM120" else 3
    assert s["outcome"] == "ok", s
    assert s["current_da"] == CURRENTS_DA[:phases] + [0] * (3 - phases)
    assert s["max_da"] == max(CURRENTS_DA[:phases])
    assert (s["power_w"], s["energy_wh"]) == (POWER_W, ENERGY_WH)
    assert (s["fresh"], s["status"], s["counts"]) == (True, "ok", [3, 0, 0, 0, 0])
    # The next reading follows the meter.
    peer.set([61, 60, 59], 4170, ENERGY_WH + 300)
    s = driver.handle({"op": "poll", "now": 2000})
    assert (s["current_da"][:phases], s["power_w"], s["energy_wh"]) == (
        [61, 60, 59][:phases], 4170, ENERGY_WH + 300)
    # Every request passed pymodbus's RTU checks and was answered.
    assert peer.requests == peer.answered == 6
    assert s["report"]["currents"] == [c / 10 for c in [61, 60, 59][:phases]]


def test_every_fault_is_counted_and_reported_never_raised(bus):
    driver, peer = bus("SDM630", max_age_ms=2000)
    assert driver.handle({"op": "poll", "now": 1000})["outcome"] == "ok"
    counts = [3, 0, 0, 0, 0]
    for fault, outcome in (("crc", "crc"), ("silent", "timeout"), ("address", "wrong"),
                           ("exception", "exception")):
        peer.fault = fault
        s = driver.handle({"op": "poll", "now": 2000})
        counts[rtu.OUTCOMES.index(outcome)] += 1
        assert (s["outcome"], s["counts"]) == (outcome, counts), fault
        assert s["report"]["lastError"] == outcome
        # A failed poll leaves the last whole reading, still fresh within max_age_ms.
        assert (s["current_da"], s["fresh"], s["status"]) == (CURRENTS_DA, True, "ok")
    assert s["last_exception"] == s["report"]["lastException"] == 6  # SERVER DEVICE BUSY
    peer.fault = "silent"
    s = driver.handle({"op": "poll", "now": 3001})
    assert (s["fresh"], s["status"], s["good"]) == (False, "lost", False)
    peer.fault = None
    s = driver.handle({"op": "poll", "now": 4000})
    assert (s["outcome"], s["status"], s["current_da"]) == ("ok", "ok", CURRENTS_DA)


@pytest.mark.parametrize("case", ["model", "address", "de_stuck", "auto_direction"])
def test_a_wrong_meter_or_wiring_is_counted(bus, case):
    if case == "model":  # an ABB B23 where an SDM630 is configured: no such registers
        driver, peer = bus("SDM630", peer_model="B23")
        s = driver.handle({"op": "poll", "now": 1000})
        assert (s["outcome"], s["last_exception"]) == ("exception", 2), s
    elif case == "address":  # the meter set to another address: nobody answers
        driver, peer = bus("SDM630", address=ADDRESS + 1)
        s = driver.handle({"op": "poll", "now": 1000})
        assert s["outcome"] == "timeout" and peer.requests == 1 and peer.answered == 0
    elif case == "de_stuck":  # the DE pin never drives: no request reaches the line
        driver, peer = bus("SDM630", de="stuck")
        s = driver.handle({"op": "poll", "now": 1000})
        assert s["outcome"] == "timeout" and peer.requests == 0
    else:  # a transceiver that turns around by itself: no pin at all
        driver, peer = bus("SDM630", de="auto")
        s = driver.handle({"op": "poll", "now": 1000})
        assert s["outcome"] == "ok" and s["current_da"] == CURRENTS_DA
        return
    assert s["status"] == "waiting" and not s["fresh"]
    assert s["report"]["status"] == "waiting" and "currents" not in s["report"]


def test_the_poll_thread_reads_at_a_steady_period(bus):
    driver, peer = bus("SDM630", max_age_ms=250)
    # The meter falls silent after 6 polls of 3 reads (counted, not timed: make test's
    # parallel workers load the machine): the thread goes on, and the meter is lost.
    stop = threading.Event()

    def silence():
        while not stop.is_set():
            if peer.requests >= 18:
                peer.fault = "silent"
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=silence)
    watcher.start()
    try:
        s = driver.handle({"op": "run", "period_ms": 100, "ms": 1500})
    finally:
        stop.set()
        watcher.join()
    ok, _, timeouts, _, _ = s["counts"]
    # One poll per period at most: 1.5 s of a 100 ms period is at most 16 polls (without the
    # period's wait a poll takes about 15 ms on the bench: about 100); silent polls then take
    # one response time (300 ms) each.
    good = ok // 3  # a poll cut by the silence may have read one or two first
    assert 5 <= good <= 7, s
    assert timeouts >= 1 and s["polls"] == good + timeouts <= 16, s
    assert (s["status"], s["fresh"]) == ("lost", False)


def test_make_bench_measures_the_tick_while_the_meters_are_polled(unix32):
    # make bench's probe (tools/measure/meters.py), short: the tick ran in real time in
    # both turns, some ticks while a poll was under way, every poll of both meters read
    # (the agent wired with an EV and a mains meter on one bus, at the ESP32's heap).
    from tools.measure import meters
    t = meters.tick_cost(turn_s=1, turns=2)
    assert t is not None, "the probe failed"
    assert t["without"]["late"]["ticks"] >= 50 and t["with"]["late"]["ticks"] >= 50, t
    assert t["during_poll"]["late"] is not None and t["polls"] >= 3, t
    assert t["ev_status"] == 1 and t["counts"][0] >= 3 * t["polls"] and sum(t["counts"]) == \
        t["counts"][0], t
    assert 0 < t["imported"] < 8192 and 0 < t["wired"] < 8192, t
    assert meters.rows(None, t)[2][1].startswith("without polls "), meters.rows(None, t)
