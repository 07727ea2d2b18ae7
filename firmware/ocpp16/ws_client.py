# A small blocking WebSocket client (RFC 6455), as OCPP-J needs it: one text message at a
# time, both ways, over ws:// or wss://. Every wait is bounded (connect, handshake, the rest
# of a frame once it has begun) and so is every incoming message: a frame above `limit`
# bytes is drained in small pieces and reported as too large, with its first bytes, instead
# of being held whole in a small heap. The caller waits for input with select.poll on
# `sock` (docs/design.md says why not micropython-lib's aiohttp).
import binascii
import hashlib
import os
import socket

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT = 1
_BINARY = 2
_CLOSE = 8
_PING = 9
_PONG = 10
_HEAD = 64  # bytes of an oversized message kept for the caller (its OCPP message id)
_CHUNK = 256
_OUT = 512  # bytes masked and written at a time: the garbage of a send stays small
_HEADER_LINES = 32  # an HTTP answer with more header lines than this is not a CSMS's


class TooLarge:
    # What recv() returns for a message above the limit: its size and first bytes.
    def __init__(self, size, head):
        self.size = size
        self.head = head


def parse_url(url):
    # ("ws" or "wss", host, port, path); ValueError for anything else.
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("ws", "wss"):
        raise ValueError("the URL must start with ws:// or wss://")
    hostport, slash, path = rest.partition("/")
    host, colon, port = hostport.partition(":")
    if not host or "@" in hostport or (colon and not port.isdigit()):
        raise ValueError("the URL needs a host[:port] without user information")
    return (scheme, host, int(port) if port else (443 if scheme == "wss" else 80),
            slash + path or "/")


def _accept_key(key):
    return binascii.b2a_base64(hashlib.sha1(key + _GUID).digest()).strip()


class WebSocket:
    def __init__(self, sock, tcp, limit, timeout):
        self.sock = sock  # the stream (TLS or TCP): poll this one
        self.tcp = tcp
        self.limit = limit
        self.timeout = timeout
        self._buf = bytearray(limit)
        self._small = bytearray(_CHUNK)

    # -- sending
    def send_text(self, data):
        self._send(_TEXT, data)

    def ping(self):
        self._send(_PING, b"")

    def _send(self, opcode, data):
        # One final frame, masked with a fresh key as a client must: the header with the
        # first piece, then the rest, each piece XORed as one big integer rather than byte
        # by byte (a piece starts at a multiple of 4, so the key's pattern restarts in it).
        n = len(data)
        if n < 126:
            head = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            head = bytes((0x80 | opcode, 0xFE, n >> 8, n & 0xFF))
        else:
            raise ValueError("message too long")
        key = os.urandom(4)
        out = head + key
        off = 0
        while True:
            k = min(_OUT, n - off)
            if k:
                out += (int.from_bytes(data[off:off + k], "big") ^ int.from_bytes(
                    (key * (k // 4 + 1))[:k], "big")).to_bytes(k, "big")
            self.sock.write(out)
            off += k
            if off >= n:
                return
            out = b""

    # -- receiving
    def recv(self):
        # The next message (a memoryview into a buffer reused by the next call), a TooLarge,
        # or None when only a control frame came (pings are answered here). Raises OSError
        # when the server closes or breaks the protocol. Call it when poll says readable:
        # it waits at most `timeout` for the rest of a frame.
        self.tcp.settimeout(self.timeout)
        size = 0
        over = 0  # bytes beyond the limit (drained, not kept)
        first = True
        while True:
            fin, opcode, n = self._frame_head()
            if opcode >= _CLOSE:  # control frames may come between fragments
                self._control(opcode, n)
                if first:
                    return None
                continue
            if (opcode == 0) == first:
                raise OSError("WebSocket: fragments out of order")
            first = False
            keep = 0 if over else min(n, self.limit - size)
            self._fill(memoryview(self._buf)[size:size + keep])
            size += keep
            if keep < n:
                self._drain(n - keep)
                over += n - keep
            if fin:
                break
        if over:
            return TooLarge(size + over, bytes(self._buf[:min(size, _HEAD)]))
        return memoryview(self._buf)[:size]

    def _frame_head(self):
        b = self._small
        self._fill(memoryview(b)[:2])
        fin = b[0] & 0x80
        opcode = b[0] & 0x0F
        if b[0] & 0x70 or b[1] & 0x80:
            raise OSError("WebSocket: reserved bits or a masked frame from the server")
        n = b[1] & 0x7F
        if n == 126:
            self._fill(memoryview(b)[:2])
            n = b[0] << 8 | b[1]
        elif n == 127:
            self._fill(memoryview(b)[:8])
            if b[0] or b[1] or b[2] or b[3]:
                raise OSError("WebSocket: frame length beyond 4 GB")
            n = b[4] << 24 | b[5] << 16 | b[6] << 8 | b[7]
        if opcode >= _CLOSE and (n > 125 or not fin):
            raise OSError("WebSocket: malformed control frame")
        if _BINARY < opcode < _CLOSE or opcode > _PONG:
            raise OSError("WebSocket: unknown opcode %d" % opcode)
        return fin, opcode, n

    def _control(self, opcode, n):
        body = memoryview(self._small)[:n]
        self._fill(body)
        if opcode == _PING:
            self._send(_PONG, bytes(body))
        elif opcode == _CLOSE:
            code = body[0] << 8 | body[1] if n >= 2 else 1005
            try:
                self._send(_CLOSE, bytes(body[:2]))
            except OSError:
                pass
            raise OSError("WebSocket closed by the server (%d)" % code)

    def _fill(self, view):
        got = 0
        n = len(view)
        while got < n:
            k = self.sock.readinto(view[got:])
            if not k:
                raise OSError("WebSocket: connection closed mid-frame")
            got += k

    def _drain(self, n):
        view = memoryview(self._small)
        while n > 0:
            k = min(n, _CHUNK)
            self._fill(view[:k])
            n -= k

    def close(self):
        try:
            self._send(_CLOSE, b"\x03\xe8")  # 1000: normal closure
        except (OSError, ValueError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def connect(url, protocol, headers=(), tls=None, limit=4096, timeout=10):
    # Open `url` (parse_url), asking for subprotocol `protocol`, with extra `headers`
    # (name, value) pairs. `tls(sock, host)` wraps the TCP socket for wss:// (trust.py).
    scheme, host, port, path = parse_url(url)
    if scheme == "wss" and tls is None:
        raise OSError("wss:// needs a CA to check the server (ocpp.ca_file)")
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]
    tcp = socket.socket()
    try:
        tcp.settimeout(timeout)
        tcp.connect(addr)
        try:
            tcp.setsockopt(6, 1, 1)  # TCP_NODELAY: a message goes out whole, at once
        except (AttributeError, OSError):
            pass
        sock = tls(tcp, host) if scheme == "wss" else tcp
        key = binascii.b2a_base64(os.urandom(16)).strip()
        lines = ["GET %s HTTP/1.1" % path, "Host: %s:%d" % (host, port), "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: " + key.decode(),
                 "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: " + protocol]
        for name, value in headers:
            lines.append(name + ": " + value)
        sock.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        _check_answer(sock, _accept_key(key), protocol)
        return WebSocket(sock, tcp, limit, timeout)
    except BaseException:
        tcp.close()
        raise


def _check_answer(sock, accept, protocol):
    status = sock.readline(200)
    parts = status.split(None, 2)
    if len(parts) < 2 or parts[1] != b"101":
        code = parts[1].decode() if len(parts) > 1 else "no answer"
        raise OSError("WebSocket: the server answered HTTP %s%s" % (
            code, " (credentials refused)" if code == "401" else ""))
    got_accept = got_protocol = None
    for _ in range(_HEADER_LINES):
        line = sock.readline(512)
        if not line:
            raise OSError("WebSocket: connection closed during the handshake")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"sec-websocket-accept":
            got_accept = value.strip()
        elif name == b"sec-websocket-protocol":
            got_protocol = value.strip()
    else:
        raise OSError("WebSocket: handshake answer too long")
    if got_accept != accept:
        raise OSError("WebSocket: wrong Sec-WebSocket-Accept")
    if got_protocol != protocol.encode():
        raise OSError("WebSocket: the server did not accept subprotocol " + protocol)
