# A Modbus RTU master over the board's serial port (docs/boards.md, "The serial port"):
# builds read requests (function 0x03 holding / 0x04 input registers), drives the RS485
# direction pin, and checks every reply (CRC, address, function, byte count, exception).
# Runs in the meter poll thread (meter_poll.py), never in the control tick. Every outcome is
# a code, counted by the caller: nothing about the line is raised. Buffers are allocated
# once; a transaction allocates nothing of its own.
# The protocol: Modbus over Serial Line V1.02 (modbus.org, 2006) and Modbus Application
# Protocol V1.1b3 (2012), cited by section below. Frame layout and timings: docs/meters.md.
import select
from micropython import const

# Outcomes of one transaction, also the indexes of a meter's counters (meter_poll.Meter).
OK = const(0)
CRC = const(1)  # a damaged reply: its CRC does not match (a frame cut short fails it too)
TIMEOUT = const(2)  # no reply within the response time, or the port failed
EXCEPTION = const(3)  # the meter answered with an exception code (Application Protocol 7)
WRONG = const(4)  # an intact reply that does not answer the request (another address,
#                   function or length), or a value the model's table cannot read
OUTCOMES = ("ok", "crc", "timeout", "exception", "wrong")

HOLDING = const(0x03)  # read holding registers (Application Protocol 6.3)
INPUT = const(0x04)  # read input registers (6.4)
MAX_REGISTERS = const(125)  # per read request, 0x7D (6.3, 6.4)
_FRAME = const(5 + 2 * MAX_REGISTERS)  # address, function, byte count, data, CRC: 255
# How long a meter may take to begin its reply once the request has left. The standard
# leaves it to the master (Serial Line 2.4.1); meter manuals give 200-300 ms at most (Lumel
# ND25: "allow 300 ms ... before assuming that the meter is not going to respond").
RESPONSE_MS = const(300)
_DRAINS = const(4)  # stale input is discarded before a request, at most this many frames


def silence_us(baudrate):
    # t3.5, the silence that separates frames: 3.5 characters of 11 bits (start, 8 data,
    # parity or a second stop bit, stop), and 1750 us above 19200 baud (Serial Line 2.5.1.1).
    return 1750 if baudrate > 19200 else 38500000 // baudrate


def crc16(buf, n):
    # CRC-16/MODBUS over buf[:n]: reflected polynomial 0xA001, initial 0xFFFF (Serial Line
    # 6.2.2). Sent low byte first.
    crc = 0xFFFF
    for i in range(n):
        crc ^= buf[i]
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def request(buf, address, function, start, count):
    # The 8-byte read request into buf: address, function, start and quantity big-endian
    # (Application Protocol 6.3/6.4), CRC low byte first.
    buf[0] = address
    buf[1] = function
    buf[2] = start >> 8
    buf[3] = start & 0xFF
    buf[4] = count >> 8
    buf[5] = count & 0xFF
    crc = crc16(buf, 6)
    buf[6] = crc & 0xFF
    buf[7] = crc >> 8


class Master:
    # One master on one bus. `port` is the board's serial port: write(buf), readinto(buf,
    # timeout_ms), baudrate, and de (the driver-enable pin, or None when the transceiver
    # turns around by itself).
    def __init__(self, port):
        self.port = port
        self.rx = bytearray(_FRAME)  # the last reply; a read's registers start at rx[3]
        self.exception = 0  # the code of the last exception reply
        self._tx = bytearray(8)
        self._views = {}  # reply length -> a view of rx that long, made once per length
        # Before a request the line must have been silent for t3.5 (whole ms, rounded up). It
        # is waited on a poll of no stream, as nap() waits: the GIL is released meanwhile, and
        # this one poll object, with MicroPython's ipoll(), allocates nothing per wait.
        self._gap_ms = (silence_us(port.baudrate) + 999) // 1000
        idle = select.poll()
        self._idle = getattr(idle, "ipoll", idle.poll)  # CPython has poll() only

    def read(self, address, function, start, count):
        # One read transaction; the outcome (OK ... WRONG). On OK the `count` registers are
        # in rx[3:3 + 2 * count], big-endian as sent. address 1-247 and count 1-125 are the
        # caller's to check (meter_poll.Meter does, at setup).
        expected = 5 + 2 * count
        view = self._views.get(expected)
        if view is None:
            view = self._views[expected] = memoryview(self.rx)[:expected]
        request(self._tx, address, function, start, count)
        port = self.port
        try:
            for _ in range(_DRAINS):  # stale bytes (a late reply, noise): not this reply
                if not port.readinto(view, 0):
                    break
            self._idle(self._gap_ms)
            self._send()
            n = port.readinto(view, RESPONSE_MS)
        except OSError:
            return TIMEOUT  # the port itself failed: no reply either way
        return self._check(n, address, function, expected)

    def _send(self):
        de = self.port.de
        if de is not None:
            de.value(1)
        try:
            self.port.write(self._tx)  # returns once the last bit has left the line
        finally:
            if de is not None:
                de.value(0)  # never left driving the bus, whatever happened

    def _check(self, n, address, function, expected):
        rx = self.rx
        if n == 0:
            return TIMEOUT
        if n < 5 or crc16(rx, n - 2) != rx[n - 2] | rx[n - 1] << 8:
            return CRC
        if rx[0] != address:
            return WRONG
        if rx[1] == function | 0x80 and n == 5:
            self.exception = rx[2]
            return EXCEPTION
        if rx[1] != function or rx[2] != expected - 5 or n != expected:
            return WRONG
        return OK
