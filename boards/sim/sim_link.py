# The simulated board's wire to the bench process: fixed binary frames over a loopback
# socket, read into preallocated buffers so a tick costs no allocation.
#   bench -> board  b"T" + 8 x int32 LE: now, high mV, low mV, feedback, current dA,
#                   power W, energy Wh, rcd          (one tick's inputs)
#                   b"R" + kind + u16 len + JSON     (a request: 0 commands, 1 settings, 2 read)
#                   b"U" + int64 LE                  (Unix ms at bench time 0)
#                   b"F"                             (factory reset: the button held)
#   board -> bench  b"O" + int32 duty counts + int32 contactor   (outputs after a tick)
#                   b"M" + retain + u16 len + topic + u32 len + payload  (a publish)
import socket

KINDS = ("commands", "settings", "read")


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
        self._kind = bytearray(1)
        self._in = bytearray(32)
        self._out = bytearray(b"O" + bytes(8))

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
        self.sock.write(out)
        while True:
            self._fill(self._kind, 1)
            kind = self._kind[0]
            if kind == 84:  # T
                b = self._in
                self._fill(b, 32)
                board.now = _i32(b, 0)
                board.high_mv = _i32(b, 4)
                board.low_mv = _i32(b, 8)
                board.feedback = b[12] != 0
                board.current_da = _i32(b, 16)
                board.power_w = _i32(b, 20)
                board.energy_wh = _i32(b, 24)
                board.rcd_tripped = b[28] != 0
                return
            if kind == 82:  # R
                head = bytearray(3)
                self._fill(head, 3)
                payload = bytearray(head[1] | head[2] << 8)
                if payload:
                    self._fill(payload, len(payload))
                on_request(KINDS[head[0] % 3], bytes(payload))
            elif kind == 70:  # F
                board.reset_requested = True
            elif kind == 85:  # U
                head = bytearray(8)
                self._fill(head, 8)
                board.unix_base_ms = int.from_bytes(head, "little")
            else:
                raise OSError("bad frame from bench")

    def publish(self, topic, payload, retain):
        topic = self.prefix + topic
        head = bytearray(4)
        head[0] = 77  # M
        head[1] = 1 if retain else 0
        head[2] = len(topic) & 0xFF
        head[3] = len(topic) >> 8
        size = bytearray(4)
        _put32(size, 0, len(payload))
        self.sock.write(head)
        self.sock.write(topic)
        self.sock.write(size)
        self.sock.write(payload)
