# One HTTP request read off a client's socket, bounded (docs/http.md, "Hostile input"): the
# request line, the few headers the front uses, the body. Whatever breaks a bound or the
# syntax is refused with its status (Refused) before anything more is read; a client that
# closes is Refused(0). The HTTP front's thread: the socket is non-blocking, and every wait
# is a poll that ends at the request's deadline (408). One Reader serves every connection,
# with one fixed buffer: a header line is never longer than it.
from micropython import const
import select
import time

LINE = const(512)  # bytes: the request line (414 beyond) and each header line (431 beyond)
_HEAD = const(4096)  # bytes of header lines together (431 beyond)
_FIELDS = const(32)  # header lines (431 beyond)
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


class Refused(Exception):
    # An HTTP refusal before the request reaches the API: its status (0: the client is
    # gone, nothing to answer), code, message, and headers to send with it.
    def __init__(self, status, code="", message="", headers=b""):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def _bad(message):
    return Refused(400, "INVALID_REQUEST", message)


class Reader:
    def __init__(self):
        self.buf = bytearray(LINE)
        self.poller = select.poll()
        self.conn = None

    def start(self, conn, deadline):
        # A new connection; the whole request must be in before board-independent time
        # `deadline` (time.ticks_ms()).
        self.conn = conn
        self.deadline = deadline
        self.have = 0  # bytes in buf
        self.pos = 0  # bytes of buf consumed
        self.length = None  # Content-Length
        self.read = 0  # body bytes consumed
        self.chunked = False
        self.auth = None
        self.expect = False
        conn.setblocking(False)
        self.poller.register(conn, select.POLLIN)

    def end(self):
        self.poller.unregister(self.conn)
        self.conn = None

    def head(self):
        # The request line and headers: sets method, target, auth (the Authorization
        # value, bytes), length (Content-Length), chunked (a Transfer-Encoding), expect
        # (100-continue).
        line = self._line(414, "URI_TOO_LONG", "the request line is longer than %d bytes" % LINE)
        if not line:  # RFC 9112 2.2: an empty line before the request line is ignored
            line = self._line(414, "URI_TOO_LONG", "the request line is too long")
        parts = line.split(b" ")
        if len(parts) != 3:
            raise _bad("the request line must be METHOD /path HTTP/1.1")
        method, target, version = parts
        if version not in _VERSIONS:
            if version.startswith(b"HTTP/"):
                raise Refused(505, "HTTP_VERSION_NOT_SUPPORTED", "HTTP/1.1 only")
            raise _bad("the request line must end in HTTP/1.1")
        if not 0 < len(method) <= 16 or any(not 65 <= b <= 90 for b in method):
            raise _bad("the method must be an upper-case word")
        if target[:1] != b"/" or any(not 33 <= b <= 126 for b in target):
            raise _bad("the target must be a path of printable characters")
        self.method = method.decode()
        self.target = target.decode()
        size = count = 0
        while True:
            line = self._line(431, "HEADERS_TOO_LARGE",
                              "a header line is longer than %d bytes" % LINE)
            if not line:
                return
            count += 1
            size += len(line)
            if count > _FIELDS or size > _HEAD:
                raise Refused(431, "HEADERS_TOO_LARGE", "more than %d header lines or %d bytes"
                              % (_FIELDS, _HEAD))
            self._field(line)

    def _field(self, line):
        if line[0] in (32, 9):
            raise _bad("folded header lines are not taken")
        colon = line.find(b":")
        name = line[:colon].lower()
        if colon <= 0 or b" " in name or b"\t" in name:
            raise _bad("a header line must be Name: value")
        value = line[colon + 1:].strip()
        if name == b"authorization":
            if self.auth is not None:
                raise _bad("Authorization is given twice")
            self.auth = value
        elif name == b"content-length":
            if not value.isdigit() or len(value) > 9 or \
                    (self.length is not None and self.length != int(value)):
                raise _bad("Content-Length must be one number of bytes")
            self.length = int(value)
        elif name == b"transfer-encoding":
            self.chunked = True
        elif name == b"expect":
            self.expect = value.lower() == b"100-continue"

    def body(self):
        # The body, Content-Length bytes (the caller has checked the length).
        n = self.length
        out = bytearray(n)
        k = min(n, self.have - self.pos)
        if k:
            out[:k] = self.buf[self.pos:self.pos + k]
            self.pos += k
        view = memoryview(out)
        while k < n:
            k += self._read_into(view[k:])
        self.read = n
        return out

    def unread(self):
        # Bytes the client may still be sending (a request refused part-read: some).
        return (self.length or 0) - self.read if self.read >= 0 else LINE

    def drain(self, limit, ms, quiet_ms):
        # Read and drop what the client still sends, up to `limit` bytes, for at most `ms`,
        # until it closes or is quiet for `quiet_ms`: a socket closed with input unread is
        # reset, and a reset can cost the client the answer already sent.
        until = time.ticks_add(time.ticks_ms(), ms)
        self.conn.setblocking(False)
        view = memoryview(self.buf)
        while limit > 0:
            try:
                n = self.conn.readinto(view)
            except OSError:
                return
            if n == 0:
                return
            if n is None:
                left = time.ticks_diff(until, time.ticks_ms())
                if left <= 0 or not self.poller.poll(min(left, quiet_ms)):
                    return
            else:
                limit -= n

    def _line(self, status, code, message):
        # The next line, without its CR LF (bytes); Refused(status, code) when it does not
        # fit the buffer.
        buf = self.buf
        while True:
            i = buf.find(b"\n", self.pos, self.have)
            if i >= 0:
                end = i - 1 if i > self.pos and buf[i - 1] == 13 else i
                line = bytes(memoryview(buf)[self.pos:end])
                self.pos = i + 1
                return line
            if self.pos:  # move the unread rest to the front
                rest = self.have - self.pos
                buf[:rest] = buf[self.pos:self.have]
                self.have = rest
                self.pos = 0
            if self.have == len(buf):
                raise Refused(status, code, message)
            self.have += self._read_into(memoryview(buf)[self.have:])

    def _read_into(self, view):
        # At least one byte into `view`, waiting until the deadline (408).
        while True:
            try:
                n = self.conn.readinto(view)
            except OSError:  # reset by the client
                raise Refused(0)
            if n == 0:  # the client closed
                raise Refused(0)
            if n is not None:
                return n
            left = time.ticks_diff(self.deadline, time.ticks_ms())
            if left <= 0:
                raise Refused(408, "REQUEST_TIMEOUT", "the request did not arrive whole in "
                              "time; the connection is closed")
            self.poller.poll(left)
