# The MQTT client layer (firmware/mqtt/mqtt_client.py on micropython-lib's umqtt.simple), byte for
# byte against a fake socket, the way micropython-lib's own test_umqtt_simple.py tests
# umqtt.simple. Runs under CPython (host_tests/test_mqtt_client.py imports it) and as a
# script under micropython, where it prints "ok <case>" for each case that passes.
import io
import sys

import umqtt.simple as umqtt_simple
from mqtt_client import BoundedClient


class Blocked(Exception):
    # A read that would wait for ever on a real socket: the client must never do that.
    pass


class Socket:
    # A TCP socket, or a TLS one over `under` (whose blocking mode it shares, as mbedTLS's).
    def __init__(self, read_data=b"", stalls=False, under=None):
        self.under = under
        self.rx = io.BytesIO(read_data)
        self.left = len(read_data)
        self.stalls = stalls  # after the data: silence (True) or the peer closed (False)
        self.tx = io.BytesIO()
        self.timeout = None  # None: blocking, 0: non-blocking, > 0: seconds
        self.timeouts = []
        self.largest_read = 0
        self.addr = None

    def _take(self, n):
        self.largest_read = max(self.largest_read, n)
        timeout = self.under.timeout if self.under else self.timeout
        if n > self.left and self.stalls:
            if timeout == 0 and self.left == 0:
                return None
            if timeout is None:
                raise Blocked("read(%d) would block for ever" % n)
            raise OSError(110)  # ETIMEDOUT
        n = min(n, self.left)
        self.left -= n
        return self.rx.read(n)

    def read(self, n):
        return self._take(n)

    def readinto(self, buf):
        data = self._take(len(buf))
        if data is None:
            return None
        buf[:len(data)] = data
        return len(data)

    def write(self, buf, length=None):
        if length is None:
            length = len(buf)
        self.tx.write(bytes(buf[:length]))
        return length

    def settimeout(self, t):
        self.timeout = t
        self.timeouts.append(t)

    def setblocking(self, flag):
        if self.under:
            self.under.setblocking(flag)
        else:
            self.timeout = None if flag else 0

    def connect(self, addr):
        self.addr = addr

    def close(self):
        pass

    def sent(self):
        return self.tx.getvalue()


class SocketModule:
    def __init__(self, sock):
        self.sock = sock

    def socket(self, *a):
        return self.sock

    def getaddrinfo(self, host, port, *a):
        return [(2, 1, 0, "", (host, port))]


class Context:
    # An SSLContext stand-in: records what umqtt.simple asks of it.
    def __init__(self, wrapped, refuse=None):
        self.wrapped = wrapped
        self.refuse = refuse
        self.calls = []

    def wrap_socket(self, sock, server_hostname=None):
        self.calls.append((sock, server_hostname))
        if self.refuse:
            raise ValueError(self.refuse)
        self.wrapped.under = sock
        return self.wrapped


CONNACK = b"\x20\x02\x00\x00"


def connected(read_data=b"", stalls=True, **kw):
    # A client after connect(); the fake then serves read_data.
    sock = Socket(CONNACK + read_data, stalls)
    real = umqtt_simple.socket
    umqtt_simple.socket = SocketModule(sock)
    try:
        c = BoundedClient(b"c1", "broker.example", 1883, **kw)
        got = []
        too_large = []
        c.set_callback(lambda topic, msg: got.append((topic, msg)))
        c.on_oversize = lambda topic, size: too_large.append((topic, size))
        c.connect()
    finally:
        umqtt_simple.socket = real
    sock.tx = io.BytesIO()
    return c, sock, got, too_large


def expect(got, want):
    assert got == want, "%r != %r" % (got, want)


def raises(exc, f, *args):
    try:
        f(*args)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


def case_connect_packet_and_timeout():
    sock = Socket(CONNACK)
    real = umqtt_simple.socket
    umqtt_simple.socket = SocketModule(sock)
    try:
        c = BoundedClient(b"c1", "broker.example", 1883, user=b"u", password=b"p", keepalive=30)
        c.set_last_will(b"t/availability", b"offline", retain=True)
        expect(c.connect(), 0)
    finally:
        umqtt_simple.socket = real
    expect(sock.addr, ("broker.example", 1883))
    # CONNECT, remaining length 45; flags 0xE6 = user, password, will retain, will, clean.
    expect(sock.sent(), b"\x10\x2d" b"\x00\x04MQTT\x04\xe6\x00\x1e" b"\x00\x02c1"
           b"\x00\x0et/availability" b"\x00\x07offline" b"\x00\x01u" b"\x00\x01p")
    expect(sock.timeouts, [10])  # connect, TLS handshake and CONNACK are bounded too
    assert c.tcp is sock


def case_tls_context_gets_the_server_name_and_the_tcp_socket_is_kept():
    tls = Socket(CONNACK)
    tcp = Socket()
    ctx = Context(tls)
    real = umqtt_simple.socket
    umqtt_simple.socket = SocketModule(tcp)
    try:
        c = BoundedClient(b"c1", "broker.example", ssl=ctx)
        expect(c.port, 8883)
        c.connect()
    finally:
        umqtt_simple.socket = real
    expect(ctx.calls, [(tcp, "broker.example")])  # the name mbedTLS checks the cert against
    assert c.sock is tls and c.tcp is tcp
    expect(tls.sent()[:2], b"\x10\x0e")  # CONNECT went through TLS
    c.set_callback(lambda t, m: None)
    tls.rx = io.BytesIO(b"\xd0")
    tls.left = 1
    tls.stalls = True
    raises(OSError, c.check_msg)  # PINGRESP cut after one byte: a timeout, on the TCP socket
    expect(tcp.timeouts, [10, 10])


def case_refused_certificate_is_one_line():
    real = umqtt_simple.socket
    umqtt_simple.socket = SocketModule(Socket())
    try:
        c = BoundedClient(b"c1", "broker.example", ssl=Context(None, refuse=(
            "The certificate is not correctly signed by the trusted CA\n"
            "The certificate Common Name (CN) does not match with the expected CN\n")))
        e = raises(OSError, c.connect)
    finally:
        umqtt_simple.socket = real
    expect(str(e), "TLS: certificate of broker.example refused: The certificate is not "
           "correctly signed by the trusted CA The certificate Common Name (CN) does not "
           "match with the expected CN")


def case_subscribe_and_publish_bytes():
    c, sock, got, _ = connected(b"\x90\x03\x00\x01\x00")
    c.subscribe(b"ev-charger/x/commands")
    expect(sock.sent(), b"\x82\x1a\x00\x01\x00\x15ev-charger/x/commands\x00")
    sock.tx = io.BytesIO()
    c.publish(b"ev-charger/x/state", b"{}", True)
    expect(sock.sent(), b"\x31\x16\x00\x12ev-charger/x/state{}")


def case_small_message_reaches_the_callback_and_returns_the_op():
    c, sock, got, too_large = connected(b"\x30\x0a\x00\x03a/b" b"hello")
    expect(c.check_msg(), 0x30)  # as umqtt.simple returns it
    expect(got, [(b"a/b", b"hello")])
    expect(too_large, [])
    expect(c.check_msg(), None)  # nothing more: returns at once
    assert c.sock is sock  # the raw socket is back in place between messages


def case_qos1_message_is_acknowledged():
    c, sock, got, _ = connected(b"\x32\x0a\x00\x03a/b\x12\x34" b"{}x")
    expect(c.check_msg(), 0x32)
    expect(got, [(b"a/b", b"{}x")])
    expect(sock.sent(), b"\x40\x02\x12\x34")


def case_oversized_message_is_drained_in_pieces_and_the_next_one_is_read():
    body = b"x" * 5000
    size = 2 + 3 + len(body)
    packet = b"\x30" + bytes((size & 0x7F | 0x80, size >> 7)) + b"\x00\x03a/b" + body
    c, sock, got, too_large = connected(packet + b"\x30\x07\x00\x03a/b" b"ok")
    c.check_msg()
    expect(too_large, [(b"a/b", 5000)])
    expect(got, [])
    assert sock.largest_read <= 256, sock.largest_read  # never held whole
    c.check_msg()
    expect(got, [(b"a/b", b"ok")])


def case_payload_at_the_bound_is_delivered():
    body = b"y" * 2048
    size = 2 + 3 + len(body)
    packet = b"\x30" + bytes((size & 0x7F | 0x80, size >> 7)) + b"\x00\x03a/b" + body
    c, sock, got, too_large = connected(packet)
    c.check_msg()
    expect(got, [(b"a/b", body)])
    expect(too_large, [])


def case_oversized_qos1_message_is_still_acknowledged():
    body = b"z" * 3000
    size = 2 + 3 + 2 + len(body)
    packet = b"\x32" + bytes((size & 0x7F | 0x80, size >> 7)) + b"\x00\x03a/b\x00\x07" + body
    c, sock, got, too_large = connected(packet)
    c.check_msg()
    expect(too_large, [(b"a/b", 3000)])
    expect(sock.sent(), b"\x40\x02\x00\x07")


def case_broker_stalling_mid_packet_is_a_timeout_not_a_hang():
    c, sock, got, _ = connected(b"\x30\x0a\x00\x03a/b" b"he", stalls=True)
    raises(OSError, c.check_msg)
    expect(sock.timeout, 10)
    expect(got, [])


def case_broker_stalling_in_a_large_body_is_a_timeout():
    c, sock, got, too_large = connected(b"\x30\xa0\x1f\x00\x03a/b" + b"x" * 600, stalls=True)
    raises(OSError, c.check_msg)
    expect(too_large, [])


def case_peer_closing_mid_packet_is_an_error():
    c, sock, got, _ = connected(b"\x30\x0a\x00\x03a/b" b"he", stalls=False)
    raises(OSError, c.check_msg)
    expect(got, [])  # nothing truncated reaches the agent


def case_topic_longer_than_the_packet_is_refused():
    c, sock, got, _ = connected(b"\x30\x05\x00\x09a/b" b"hello")
    raises(OSError, c.check_msg)
    expect(got, [])


def case_pingresp_is_swallowed():
    c, sock, got, _ = connected(b"\xd0\x00")
    expect(c.check_msg(), None)
    expect(got, [])


def case_callback_publishing_at_qos1_waits_through_the_same_bounds():
    c, sock, got, _ = connected(b"\x30\x07\x00\x03a/b" b"go" b"\x40\x02\x00\x01")

    def reply(topic, msg):
        got.append(msg)
        c.publish(b"r", b"done", False, 1)  # PUBACK awaited inside the callback

    c.set_callback(reply)
    c.check_msg()
    expect(got, [b"go"])
    expect(sock.sent(), b"\x32\x09\x00\x01r\x00\x01done")
    assert c.sock is sock



def case_retained_flag_is_told_to_the_callback():
    # A retained message (RETAIN set: sent for a new subscription), then a live one.
    c, sock, got, too_large = connected(b"\x31\x07\x00\x03a/b" b"r1" b"\x30\x07\x00\x03a/b" b"l1")
    seen = []
    c.set_callback(lambda topic, msg: seen.append((msg, c.retained)))
    c.check_msg()
    c.check_msg()
    expect(seen, [(b"r1", True), (b"l1", False)])


def case_retained_flag_of_a_qos1_message_and_an_oversized_one():
    body = b"x" * 3000
    size = 2 + 3 + 2 + len(body)
    big = b"\x33" + bytes((size & 0x7F | 0x80, size >> 7)) + b"\x00\x03a/b\x00\x07" + body
    c, sock, got, too_large = connected(b"\x33\x09\x00\x03a/b\x00\x05" b"q1" + big)
    seen = []
    c.set_callback(lambda topic, msg: seen.append((msg, c.retained)))
    c.on_oversize = lambda topic, n: seen.append((n, c.retained))
    c.check_msg()
    c.check_msg()
    expect(seen, [(b"q1", True), (3000, True)])
    expect(sock.sent(), b"\x40\x02\x00\x05" b"\x40\x02\x00\x07")


def case_retained_flag_inside_a_callback_publishing_at_qos1():
    # A live message whose callback publishes at QoS 1; a retained message arrives while it
    # waits for the PUBACK: each callback sees its own message's flag.
    c, sock, got, _ = connected(b"\x30\x07\x00\x03a/b" b"go" b"\x31\x07\x00\x03a/c" b"rx"
                                b"\x40\x02\x00\x01" b"\x30\x07\x00\x03a/d" b"l2")
    seen = []

    def on_message(topic, msg):
        seen.append((msg, c.retained))
        if msg == b"go":
            c.publish(b"r", b"done", False, 1)

    c.set_callback(on_message)
    c.check_msg()
    c.check_msg()
    expect(seen, [(b"go", False), (b"rx", True), (b"l2", False)])


def case_a_json_body_is_published_in_pieces():
    # api_text.JsonBody through publish(): the same bytes as json.dumps, and no write of
    # more than 256 bytes, so the text is never held whole (issue 22, item 4).
    import json
    from api_text import JsonBody
    rows = [{"at": "2026-12-07T12:00:%02d.000Z" % i, "from": "ready", "to": "supplying",
             "cause": "start"} for i in range(16)]
    doc = {"success": True, "data": {"id": "c-1", "rows": rows, "empty": {}, "none": [],
                                     "x": [1.5, None, "caf\u00e9"]}, "meta": {"seq": 7}}
    text = json.dumps(doc).encode()
    c, sock, got, _ = connected()
    writes = []
    write = sock.write
    sock.write = lambda buf, length=None: writes.append(len(buf)) or write(buf, length)
    c.publish(b"t/state", JsonBody(doc), True)
    size = 2 + 7 + len(text)
    expect(sock.sent(), b"\x31" + bytes((size & 0x7F | 0x80, size >> 7)) + b"\x00\x07t/state"
           + text)
    assert max(writes) <= 256 and len(text) > 1500, (max(writes), len(text))
    assert c.sock is sock

CASES = [(name, f) for name, f in sorted(globals().items()) if name.startswith("case_")]

if __name__ == "__main__":
    for name, f in CASES:
        f()
        print("ok", name)
    sys.exit(0)
