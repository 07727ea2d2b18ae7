# The Modbus RTU master and the meter poll (firmware/meters/) byte for byte against a fake
# serial port, the way micropython-lib's test_umqtt_simple.py tests umqtt.simple with a fake
# socket. Runs under CPython (host_tests/test_meters.py imports it) and as a script under
# micropython, where it prints "ok <case>" for each case that passes.
import sys
from array import array

import meter_models as models
import modbus_rtu as rtu
from meter_poll import LOST, OK, WAITING, Meter
from sim_serial import ReplayPort

# Known-good frames. Requests: the Modbus Organization's and Simply Modbus's published
# examples (slave 17, function 3 from 0x006B x3; function 4 from 0x0008 x1) and what pymodbus
# builds (test_meters.py checks each against pymodbus's RTU framer). Replies: pymodbus's.
READ_HOLDING_17 = bytes.fromhex("1103006b00037687")
READ_INPUT_17 = bytes.fromhex("110400080001b298")
SDM630_CURRENTS = bytes.fromhex("0104000600069009")  # address 1, input 0x0006 x6
REPLY_12_5 = bytes.fromhex("010404414800006fae")  # address 1, input registers: 12.5f
EXCEPTION_2 = bytes.fromhex("018402c2c1")  # address 1, function 4: illegal data address


def expect(got, want):
    if got != want:
        raise AssertionError("%r != %r" % (got, want))


class Pin:
    # The RS485 driver-enable pin; every level it is given lands in `log`.
    def __init__(self, log):
        self.level = 0
        self.log = log

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = v
        self.log.append(("de", v))


class Port:
    # A serial port with scripted replies: each write() puts the next reply (bytes, or None:
    # silence) on the line. `stale` waits in the receive buffer before any request.
    def __init__(self, replies=(), stale=b"", pin=False, baudrate=9600, fail=False):
        self.baudrate = baudrate
        self.log = []
        self.de = Pin(self.log) if pin else None
        self.replies = list(replies)
        self.rx = bytearray(stale)
        self.tx = []
        self.timeouts = []
        self.fail = fail  # write() raises OSError, as a UART driver error would

    def write(self, buf):
        self.log.append(("write", self.de.level if self.de else None))
        if self.fail:
            raise OSError(5)  # EIO
        self.tx.append(bytes(buf))
        reply = self.replies.pop(0) if self.replies else None
        if reply:
            self.rx += reply

    def readinto(self, buf, timeout_ms):
        self.log.append(("read", self.de.level if self.de else None))
        self.timeouts.append(timeout_ms)
        n = min(len(buf), len(self.rx))
        for i in range(n):
            buf[i] = self.rx[i]
        self.rx = self.rx[n:]
        return n


def reply(address, function, data):
    # A reply frame with its CRC, built by the firmware's own crc16 (itself checked below).
    body = bytearray([address, function, len(data)]) + data
    crc = rtu.crc16(body, len(body))
    return bytes(body) + bytes((crc & 0xFF, crc >> 8))


def case_crc16_check_value():
    # The catalogue check value of CRC-16/MODBUS: "123456789" -> 0x4B37.
    expect(rtu.crc16(b"123456789", 9), 0x4B37)


def case_request_frames_are_byte_exact():
    buf = bytearray(8)
    rtu.request(buf, 17, rtu.HOLDING, 0x006B, 3)
    expect(bytes(buf), READ_HOLDING_17)
    rtu.request(buf, 17, rtu.INPUT, 0x0008, 1)
    expect(bytes(buf), READ_INPUT_17)
    rtu.request(buf, 1, rtu.INPUT, 0x0006, 6)
    expect(bytes(buf), SDM630_CURRENTS)


def case_a_good_reply_is_read():
    port = Port([REPLY_12_5])
    m = rtu.Master(port)
    expect(m.read(1, rtu.INPUT, 6, 2), rtu.OK)
    expect(port.tx, [bytes.fromhex("010400060002" + "91ca")])
    expect(bytes(m.rx[3:7]), bytes.fromhex("41480000"))
    expect(models.value(m.rx, 3, models.F32, False, 1), 125)
    expect(port.timeouts[-1], rtu.RESPONSE_MS)  # the wait for the reply


def case_every_bad_reply_is_an_outcome():
    good = REPLY_12_5
    cases = [
        (None, rtu.TIMEOUT),  # silence
        (good[:-1] + bytes((good[-1] ^ 1,)), rtu.CRC),  # a flipped bit
        (good[:6], rtu.CRC),  # cut short
        (b"\x01\x04", rtu.CRC),  # shorter than any frame
        (reply(2, 4, b"\x41\x48\x00\x00"), rtu.WRONG),  # another meter's address
        (reply(1, 3, b"\x41\x48\x00\x00"), rtu.WRONG),  # another function
        (reply(1, 4, b"\x41\x48"), rtu.WRONG),  # one register, not two
        (EXCEPTION_2, rtu.EXCEPTION),
    ]
    for frame, outcome in cases:
        m = rtu.Master(Port([frame]))
        expect((frame, m.read(1, rtu.INPUT, 6, 2)), (frame, outcome))
    m = rtu.Master(Port([EXCEPTION_2]))
    m.read(1, rtu.INPUT, 6, 2)
    expect(m.exception, 2)


def case_stale_input_is_not_the_reply():
    # A late reply to an earlier request waits in the port: it is drained before the request
    # goes out, and the reply that follows the request is the one read.
    late = reply(1, 4, b"\x41\x20\x00\x00")  # 10.0
    port = Port([REPLY_12_5], stale=late)
    m = rtu.Master(port)
    expect(m.read(1, rtu.INPUT, 6, 2), rtu.OK)
    expect(models.value(m.rx, 3, models.F32, False, 1), 125)
    # ... and a late reply alone is no reply.
    m = rtu.Master(Port([None], stale=late))
    expect(m.read(1, rtu.INPUT, 6, 2), rtu.TIMEOUT)


def case_the_driver_is_enabled_only_to_send():
    port = Port([REPLY_12_5], pin=True)
    rtu.Master(port).read(1, rtu.INPUT, 6, 2)
    expect(port.log, [("read", 0), ("de", 1), ("write", 1), ("de", 0), ("read", 0)])
    # A port that fails mid-write: no exception, and the bus is let go.
    port = Port(pin=True, fail=True)
    expect(rtu.Master(port).read(1, rtu.INPUT, 6, 2), rtu.TIMEOUT)
    expect(port.log[-1], ("de", 0))


def case_register_values_become_integers():
    def f32(hexword, exponent, low_first=False):
        return models.value(bytes.fromhex(hexword), 0, models.F32, low_first, exponent)

    expect(f32("41480000", 1), 125)  # 12.5 A -> dA
    expect(f32("c5e74000", 0), -7400)  # -7400.0 W
    expect(f32("449a5225", 3), 1234567)  # 1234.567 kWh (float32 0x449a5225) -> Wh
    expect(f32("00004148", 1, True), 125)  # low word first
    expect(f32("3d4ccccd", 1), 1)  # 0.05 A (float32 a hair above) rounds to 1 dA
    expect(f32("bd4ccccd", 1), -1)  # half away from zero, below it too
    expect(f32("00000000", 3), 0)
    expect(f32("80000001", 3), 0)  # a subnormal: zero
    expect(f32("7fc00000", 0), None)  # NaN
    expect(f32("7f800000", 0), None)  # infinity
    expect(f32("7149f2ca", 0), None)  # 1e30: beyond a small integer

    def integer(hexwords, encoding, exponent, low_first=False):
        return models.value(bytes.fromhex(hexwords), 0, encoding, low_first, exponent)

    expect(integer("000004e2", models.U32, -1), 125)  # 1250 x 0.01 A -> dA
    expect(integer("fff4b560", models.S32, -2), -7400)  # -740000 x 0.01 W -> W
    expect(integer("b560fff4", models.S32, -2, True), -7400)  # low word first
    expect(integer("000000000001e240", models.U64, 1), 1234560)  # 123456 x 0.01 kWh -> Wh
    expect(integer("0000000f", models.U32, -1), 2)  # 1.5 dA rounds half up
    expect(integer("fffffff1", models.S32, -1), -2)  # and -1.5 half down
    expect(integer("ffffffff", models.U32, -1), None)  # not available
    expect(integer("7fffffff", models.S32, -2), None)  # not available
    expect(integer("80000000", models.S32, 0), None)  # not available (SunSpec)
    expect(integer("0000000100000000", models.U64, 1), None)  # 2**32 x 10 Wh: beyond
    expect(integer("ffffffffffffffff", models.U64, 1), None)  # not available


def case_every_model_row_is_well_formed():
    names = [row[0] for row in models.MODELS]
    expect(len(set(names)), len(names))
    for name, function, low_first, values in models.MODELS:
        assert function in (rtu.HOLDING, rtu.INPUT), name
        assert low_first in (True, False), name
        expect((name, len(values)), (name, 5))
        assert values[models.CURRENT_L1] and values[models.POWER] and \
            values[models.ENERGY], name
        for v in values:
            if v:
                reg, encoding, exponent = v
                assert 0 <= reg <= 0xFFFF and 0 <= encoding < len(models.WORDS), (name, v)
                assert -3 <= exponent <= 3, (name, v)
        assert models.find(name)[0] == name
    expect(models.find("SDM999"), None)


def sdm630_replies(currents=(125, 32, 161), power=-7400.0, energy_kwh=1234.567):
    import struct  # CPython's and MicroPython's: the reference encoder here
    f = lambda x: struct.pack(">f", x)  # noqa: E731
    return [reply(7, 4, f(currents[0] / 10) + f(currents[1] / 10) + f(currents[2] / 10)),
            reply(7, 4, f(power)), reply(7, 4, f(energy_kwh))]


def case_a_meter_reads_its_plan_and_publishes_together():
    port = Port(sdm630_replies())
    master = rtu.Master(port)
    m = Meter("SDM630", 7)
    expect((m.phases, m.fresh(1000), m.status(1000)), (3, False, WAITING))
    expect(m.poll(master, 1000), rtu.OK)
    # One read per run of adjacent registers: the currents, the power, the energy.
    expect([f[:6] for f in port.tx], [bytes.fromhex(h) for h in
                                      ("070400060006", "070400340002", "070400480002")])
    expect((list(m.current_da), m.max_da, m.power_w, m.energy_wh),
           ([125, 32, 161], 161, -7400, 1234567))
    expect((m.at_ms, m.fresh(1000), m.status(1000), list(m.counts)),
           (1000, True, OK, [3, 0, 0, 0, 0]))
    # A poll that fails half way publishes nothing: the values stay the last whole reading.
    replies = sdm630_replies((300, 300, 300))
    master = rtu.Master(Port([replies[0], None]))
    expect(m.poll(master, 2000), rtu.TIMEOUT)
    expect((list(m.current_da), m.at_ms, list(m.counts)), ([125, 32, 161], 1000, [4, 0, 1, 0, 0]))


def case_a_silent_meter_goes_stale_then_lost():
    m = Meter("SDM630", 7, max_age_ms=3000)
    m.poll(rtu.Master(Port(sdm630_replies())), 1000)
    silent = rtu.Master(Port())
    for now in (2000, 3000, 4000):
        expect(m.poll(silent, now), rtu.TIMEOUT)
    expect((m.fresh(4000), m.status(4000)), (True, OK))  # 3000 ms old: still a reading
    expect((m.fresh(4001), m.status(4001)), (False, LOST))
    m.poll(silent, 5000)
    # The poll thread marks it stale itself: the clock wrapping round cannot revive it.
    expect((m.good, m.fresh(1000 + (1 << 30))), (False, False))
    expect(m.report(5000)["status"], "lost")
    expect(m.poll(rtu.Master(Port(sdm630_replies())), 6000), rtu.OK)
    expect(m.status(6000), OK)


def case_a_meter_that_never_answered_is_lost_after_max_age():
    m = Meter("SDM120", 7, max_age_ms=3000)
    silent = rtu.Master(Port())
    m.poll(silent, 100)
    expect(m.status(3100), WAITING)
    expect(m.status(3101), LOST)
    expect(m.report(3101), {"model": "SDM120", "address": 7, "status": "lost",
                            "lastError": "timeout", "counts": {
                                "ok": 0, "crc": 0, "timeout": 1, "exception": 0,
                                "wrong": 0}})


def case_a_value_the_row_cannot_read_is_a_wrong_meter():
    replies = sdm630_replies()
    replies[1] = reply(7, 4, bytes.fromhex("7fc00000"))  # power: NaN
    m = Meter("SDM630", 7)
    expect(m.poll(rtu.Master(Port(replies)), 1000), rtu.WRONG)
    expect((m.good, list(m.counts)), (False, [1, 0, 0, 0, 1]))


def case_exceptions_are_counted_with_their_code():
    m = Meter("SDM630", 1)
    expect(m.poll(rtu.Master(Port([EXCEPTION_2])), 1000), rtu.EXCEPTION)
    expect((m.last_exception, m.report(1000)["lastException"]), (2, 2))


def case_bad_setup_is_refused():
    for model, address in (("SDM999", 1), ("SDM630", 0), ("SDM630", 248), ("SDM630", "1")):
        try:
            Meter(model, address)
        except ValueError:
            continue
        raise AssertionError("accepted %r %r" % (model, address))


def mp_case_the_ticks_view_allocates_nothing():
    # What the control tick reads of a meter: no allocation (MicroPython: gc.mem_alloc).
    import gc
    m = Meter("SDM630", 7)
    m.poll(rtu.Master(Port(sdm630_replies())), 1000)
    sink = array("i", [0])

    def tick_reads(n):
        for now in range(1000, 1000 + n):
            if m.fresh(now):
                sink[0] = m.current_da[0] + m.current_da[1] + m.current_da[2] + m.max_da + \
                    m.power_w + m.energy_wh

    def allocated(f):
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        f()
        grown = gc.mem_alloc() - before
        gc.enable()
        return grown

    tick_reads(10)
    expect(allocated(lambda: tick_reads(2000)), 0)
    assert allocated(lambda: m.report(1000)) > 0  # the probe sees an allocation


def mp_case_a_poll_of_an_integer_model_allocates_nothing():
    # An ABB B23 (integers; registers above 0x1FFF, which a frozen table boxes: found on
    # unix32 at 64 bytes a read before the plan made them small integers).
    import gc
    import struct
    replies = [reply(7, 3, struct.pack(">Q", 123450)),  # the plan reads 0x5000 first
               reply(7, 3, struct.pack(">III", 1250, 320, 1610)),
               reply(7, 3, struct.pack(">i", -740000))]
    m = Meter("B23", 7)
    master = rtu.Master(ReplayPort(replies))  # a port that allocates nothing
    m.poll(master, 0)  # the first poll makes each read's view of the receive buffer
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for now in range(20):
        m.poll(master, now)
    grown = gc.mem_alloc() - before
    gc.enable()
    expect((list(m.counts), m.energy_wh, m.power_w, list(m.current_da)),
           ([63, 0, 0, 0, 0], 1234500, -7400, [125, 32, 161]))
    expect(grown, 0)


CASES = [(name, f) for name, f in sorted(globals().items()) if name.startswith("case_")]
MP_CASES = [(name, f) for name, f in sorted(globals().items()) if name.startswith("mp_case_")]

if __name__ == "__main__":
    for name, f in CASES + MP_CASES:
        f()
        print("ok", name)
    sys.exit(0)
