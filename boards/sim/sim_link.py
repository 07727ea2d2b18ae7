# The simulated board's wire to the bench process: fixed binary frames over a loopback
# socket, read into preallocated buffers so a tick costs no allocation. The frame layout is
# defined here and nowhere else (the bench, tools/bench/agent_process.py, imports INPUTS and
# the frame kinds below).
#   bench -> board  b"T" + int32 LE per name in INPUTS  (one tick's inputs)
#                   b"R" + kind + u16 len + JSON     (a request; kind: index in topics.REQUESTS)
#                   b"U" + int64 LE                  (Unix ms at bench time 0)
#                   b"F"                             (factory reset: the button held)
#                   b"S" + u16 len + topic + u16 len + payload  (a message on a topic the
#                                                    board subscribes to beyond its own: a site's)
#   board -> bench  b"O" + int32 duty counts + int32 contactor + int32 second contactor
#                                                    (outputs after a tick)
#                   b"M" + retain + u16 len + topic + u32 len + payload  (a publish; the
#                                                    whole topic, the board's prefix included)
from micropython import const
import socket
from topics import REQUESTS

# Frame kinds: a frame's first byte, the letter the layout above gives it.
TICK = const(0x54)  # T
REQUEST = const(0x52)  # R
CLOCK = const(0x55)  # U
BUTTON = const(0x46)  # F
MESSAGE = const(0x53)  # S
OUTPUTS = const(0x4F)  # O
PUBLISH = const(0x4D)  # M

# The board attributes a T frame sets, in order.
INPUTS = ("now", "high_mv", "low_mv", "feedback", "current_da", "power_w", "energy_wh",
          "rcd_tripped", "phase_feedback")


def _i32(b, i):
    v = b[i] | b[i + 1] << 8 | b[i + 2] << 16 | b[i + 3] << 24
    return v - 0x100000000 if v & 0x80000000 else v


def _put32(b, i, v):
    b[i] = v & 0xFF
    b[i + 1] = v >> 8 & 0xFF
    b[i + 2] = v >> 16 & 0xFF
    b[i + 3] = v >> 24 & 0xFF


class Link:
    def __init__(self, port, prefix):
        self.sock = socket.socket()
        self.sock.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        self.sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: frames go out whole, at once
        self.prefix = prefix
        self.on_message = None  # f(topic, payload) for S frames (runner.Lockstep's)
        self._kind = bytearray(1)
        self._in = bytearray(4 * len(INPUTS))
        self._out = bytearray(13)
        self._out[0] = OUTPUTS

    def _fill(self, buf, n):
        got = self.sock.readinto(buf, n)
        if got is None or got == 0:
            raise OSError("bench closed the link")
        while got < n:  # rare short read: slicing allocates, so only here
            k = self.sock.readinto(memoryview(buf)[got:n])
            if not k:
                raise OSError("bench closed the link")
            got += k

    def exchange(self, board, on_request):
        out = self._out
        _put32(out, 1, board.pilot_counts)
        _put32(out, 5, 1 if board.contactor_drive else 0)
        _put32(out, 9, 1 if board.phase_drive else 0)
        self.sock.write(out)
        while True:
            self._fill(self._kind, 1)
            kind = self._kind[0]
            if kind == TICK:
                b = self._in
                self._fill(b, len(b))
                for i in range(len(INPUTS)):
                    setattr(board, INPUTS[i], _i32(b, 4 * i))
                return
            if kind == REQUEST:
                head = bytearray(3)
                self._fill(head, 3)
                payload = bytearray(head[1] | head[2] << 8)
                if payload:
                    self._fill(payload, len(payload))
                on_request(REQUESTS[head[0] % len(REQUESTS)], bytes(payload))
            elif kind == MESSAGE:
                topic = self._chunk().decode()
                payload = self._chunk()
                if self.on_message:
                    self.on_message(topic, payload)
            elif kind == BUTTON:
                board.reset_requested = True
            elif kind == CLOCK:
                head = bytearray(8)
                self._fill(head, 8)
                board.unix_base_ms = int.from_bytes(head, "little")
            else:
                raise OSError("bad frame from bench")

    def _chunk(self):
        # u16 length, then that many bytes (S frames: not on the tick's path).
        head = bytearray(2)
        self._fill(head, 2)
        data = bytearray(head[0] | head[1] << 8)
        if data:
            self._fill(data, len(data))
        return bytes(data)

    def publish(self, topic, payload, retain):
        self.publish_to(self.prefix + topic, payload, retain)

    def publish_to(self, topic, payload, retain):
        # payload: bytes, or a body that writes itself (api_text.JsonBody: a reply)
        head = bytearray(4)
        head[0] = PUBLISH
        head[1] = 1 if retain else 0
        head[2] = len(topic) & 0xFF
        head[3] = len(topic) >> 8
        size = bytearray(4)
        _put32(size, 0, len(payload))
        self.sock.write(head)
        self.sock.write(topic)
        self.sock.write(size)
        if hasattr(payload, "write_to"):
            payload.write_to(self.sock)
        else:
            self.sock.write(payload)
