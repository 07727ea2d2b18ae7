# micropython-lib's umqtt.simple (1.7.0, as MicroPython v1.28.0 freezes it), extended
# without changing its code. Its wait_msg() reads whatever the broker announces and then
# blocks for ever; here, while it runs, it reads through _Bounded, so that:
# - a read longer than max_payload (an oversized message body) is drained in small pieces
#   and not held whole in a small heap; the callback is then told "too large" instead;
# - the switch to blocking after the first byte becomes a timeout, so a broker that stalls
#   mid-packet is an OSError instead of a network thread hung for ever;
# - a read that comes back short (the peer closed mid-packet) is an OSError too;
# - a packet's first byte is kept, so the callback can tell a message the broker sent
#   because it was retained (`retained`, the PUBLISH's RETAIN flag) from a live one:
#   umqtt.simple's callback is given the topic and the body only;
# - publish() also takes a body that writes itself (len() and write_to(stream), e.g.
#   api_text.JsonBody): umqtt.simple asks its len() and hands it to sock.write(), which
#   _Bounded passes on with the client's own Out (one buffer per connection, not per
#   body), so a large message is never held whole in a small heap.
# connect() keeps the TCP socket (TLS wraps it) to set that timeout and TCP_NODELAY on, and
# a certificate that fails the check is reported as one line.
from umqtt.simple import MQTTClient
from api_text import Out
import trust

_CHUNK = 256


class _Bounded:
    # The client's socket as wait_msg() sees it.
    def __init__(self, client, sock):
        self.client = client
        self.sock = sock
        self.head = None  # the first byte of the packet being read (bytes), once read

    def read(self, n):
        c = self.client
        if self.head is None:  # wait_msg()'s first read: the packet type and flags
            self.head = self.sock.read(n)
            return self.head
        if n < 0:  # a length field that contradicts the packet's own size
            raise OSError("malformed MQTT packet")
        if n > c.max_payload:
            left = n
            view = memoryview(bytearray(_CHUNK))
            while left:
                got = self.sock.readinto(view[:min(left, _CHUNK)])
                if not got:
                    raise OSError("connection closed mid-packet")
                left -= got
            c.too_large = n
            return b""
        data = self.sock.read(n)
        if data is not None and len(data) < n:
            raise OSError("connection closed mid-packet")
        return data

    def write(self, buf, n=-1):
        if hasattr(buf, "write_to"):  # a body that writes itself (publish)
            buf.write_to(self.sock, self.client.out)
            return len(buf)
        return self.sock.write(buf) if n < 0 else self.sock.write(buf, n)

    def setblocking(self, flag):
        # umqtt.simple goes blocking once a packet has started: bound that wait instead.
        if flag:
            self.client.tcp.settimeout(self.client.io_timeout)
        else:
            self.sock.setblocking(False)


class _KeepTcp:
    # An ssl= context for MQTTClient that remembers the TCP socket it wraps.
    def __init__(self, client, ctx):
        self.client = client
        self.ctx = ctx

    def wrap_socket(self, sock, server_hostname=None):
        self.client.tcp = sock
        return trust.wrap(self.ctx, sock, server_hostname)


class BoundedClient(MQTTClient):
    max_payload = 2048
    io_timeout = 10  # seconds, for connect and for the rest of a packet once it has begun
    on_oversize = None  # f(topic, size): a message above max_payload was drained unread
    # While the callback (or on_oversize) runs: whether the broker sent this message
    # because it was retained (MQTT 3.1.1 3.3.1.3: set only for a new subscription's
    # retained messages, cleared on live ones). Read it first: a QoS 1 publish inside the
    # callback reads the next message and sets it again.
    retained = False

    def __init__(self, client_id, server, port=0, ssl=None, **kw):
        # ssl: an SSLContext (CERT_REQUIRED, the CA loaded); umqtt.simple passes it the
        # server's name, which mbedTLS checks against the certificate.
        super().__init__(client_id, server, port or (8883 if ssl else 1883),
                         ssl=_KeepTcp(self, ssl) if ssl else None, **kw)
        self.tcp = None
        self.out = Out(None)  # what a body that writes itself is gathered in (_Bounded.write)
        self.too_large = 0
        self._on_message = None
        self._reader = None

    def set_callback(self, f):
        self._on_message = f
        super().set_callback(self._deliver)

    def _deliver(self, topic, msg):
        self.retained = self._reader.head[0] & 1 == 1
        size = self.too_large
        if size:
            self.too_large = 0
            if self.on_oversize:
                self.on_oversize(topic, size)
        else:
            self._on_message(topic, msg)

    def connect(self, clean_session=True):
        self.tcp = None
        try:
            return super().connect(clean_session, self.io_timeout)
        finally:
            if self.tcp is None:  # no TLS: the socket is the TCP socket
                self.tcp = self.sock

    def wait_msg(self):
        return self._bounded(self._read_packet)

    def _read_packet(self):
        self.sock.head = None  # the next read is the packet's first byte
        return super().wait_msg()

    def publish(self, topic, msg, retain=False, qos=0):
        if not hasattr(msg, "write_to"):
            return super().publish(topic, msg, retain, qos)
        return self._bounded(super().publish, topic, msg, retain, qos)

    def _bounded(self, f, *args):
        # f(*args) with the socket seen through _Bounded.
        sock = self.sock
        if isinstance(sock, _Bounded):  # nested: inside wait_msg() or publish()
            return f(*args)
        if self._reader is None or self._reader.sock is not sock:
            self._reader = _Bounded(self, sock)
        self.sock = self._reader
        try:
            return f(*args)
        finally:
            self.sock = sock
