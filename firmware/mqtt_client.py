# micropython-lib's umqtt.simple, with two changes to how messages are read:
# - an incoming message's size is read before its body, so an oversized one is drained in
#   small pieces and refused instead of being held whole in a small heap;
# - reads after the first byte use a timeout, so a broker that stalls mid-packet is
#   detected instead of hanging the network thread for ever.
from umqtt.simple import MQTTClient

_CHUNK = 256


class BoundedClient(MQTTClient):
    max_payload = 2048
    io_timeout = 10  # seconds
    on_oversize = None  # f(topic, size)

    def wait_msg(self):
        res = self.sock.read(1)
        self.sock.settimeout(self.io_timeout)
        if res is None:
            return None
        if res == b"":
            raise OSError(-1)
        if res == b"\xd0":  # PINGRESP
            self.sock.read(1)
            return None
        op = res[0]
        if op & 0xF0 != 0x30:
            return op
        sz = self._recv_len()
        raw = self.sock.read(2)
        topic_len = raw[0] << 8 | raw[1]
        if topic_len > sz - 2:
            raise OSError("malformed PUBLISH")
        topic = self.sock.read(topic_len)
        sz -= topic_len + 2
        pid = 0
        if op & 6:
            raw = self.sock.read(2)
            pid = raw[0] << 8 | raw[1]
            sz -= 2
        if sz > self.max_payload:
            left = sz
            while left:
                piece = self.sock.read(min(left, _CHUNK))
                if not piece:
                    raise OSError(-1)
                left -= len(piece)
            if self.on_oversize:
                self.on_oversize(topic, sz)
        else:
            self.cb(topic, self.sock.read(sz))
        if op & 6 == 2:
            self.sock.write(bytes((0x40, 2, pid >> 8, pid & 0xFF)))
        return None
