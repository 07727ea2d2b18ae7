# The HTTP front (docs/http.md): the API page's own paths, served by the charger on the local
# network, a second door to the same agent as MQTT and OCPP (one command slot, one cap, one
# journal), behind a bearer token, with a small page from flash at /. An uplink
# (docs/uplinks.md) that serves instead of dialling: door.run opens its listening socket
# (connect), serves it for ever (serve) and opens it again, with backoff, if that fails.
#
# Its own thread: it waits only for its clients, takes no lock but the API's (while a request
# is applied, never while a client is read or written), and answers one client at a time,
# each within _REQUEST_MS of its accept (408 after that); at most _SLOTS more wait for their
# turn, and a connection beyond them gets 503 at once. So one slow or hostile client holds it
# for a few seconds at most, and never the control loop, the worker or the MQTT uplink.
from micropython import const
import binascii
import json
import os
import select
import socket
import time
import door
import topics
from api import MAX_PAYLOAD
from api_text import Out, envelope, error
from config import HTTP_PORT
from http_request import LINE, Reader, Refused
import http_page

_SLOTS = const(4)  # connections accepted and waiting for their turn; beyond: 503
_REQUEST_MS = const(3000)  # from a connection's accept to its whole request: beyond, 408
_WRITE_S = const(2)  # the answer must be taken within this (s)
_DRAIN_MS = const(200)  # at most this long reading what a refused client still sends,
_QUIET_MS = const(20)  # and only while it keeps sending
_POLL_MS = const(1000)
_BACKLOG = const(4)  # connections the network stack holds before they are accepted
_OUT = const(512)  # bytes of an answer gathered per socket write
# Methods HTTP defines; another word is 501, one of these on a path that takes it not 405.
_METHODS = ("GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT")
_REASONS = ((200, "OK"), (202, "Accepted"), (400, "Bad Request"), (401, "Unauthorized"),
            (404, "Not Found"), (405, "Method Not Allowed"), (408, "Request Timeout"),
            (409, "Conflict"), (411, "Length Required"), (413, "Content Too Large"),
            (414, "URI Too Long"), (422, "Unprocessable Content"),
            (429, "Too Many Requests"), (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"), (501, "Not Implemented"),
            (503, "Service Unavailable"), (505, "HTTP Version Not Supported"))
_JSON = b"Content-Type: application/json\r\nCache-Control: no-store\r\nConnection: close\r\n"
_COMPACT = (",", ":")  # the cloud's bodies (tools/cloud/contract.py): one curl for both
_BEARER = b'WWW-Authenticate: Bearer realm="charger"\r\n'


class HttpUplink:
    def __init__(self, cfg, board, agent):
        h = cfg["http"]
        self.token = h["token"].encode()
        self.host = h.get("host", "0.0.0.0")
        self.port = h.get("port", HTTP_PORT)
        self.board = board
        self.agent = agent
        self.reset = None  # nothing over HTTP asks for a restart (door.py)
        self.quiet = (OSError,)  # the listening socket's failures: one line each (door)
        self.sock = None
        self.reader = Reader()
        self.out = Out(None, _OUT)
        self.base = "/" + topics.PREFIX + "/"
        self.answered = 0  # requests answered (refusals included)
        self.turned_away = 0  # connections answered 503: _SLOTS were waiting

    def run(self):
        door.run(self, "http")

    def connect(self):
        self.board.ensure_network()  # WiFi up before the socket is bound
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(socket.getaddrinfo(self.host, self.port)[0][-1])
        s.listen(_BACKLOG)
        s.setblocking(False)
        self.sock = s
        print("http: listening on %s:%d" % (self.host, self.port))

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock = None

    def serve(self):
        # For ever: accept, and answer each connection once its request starts to arrive.
        # Raises (door.run opens the socket again) only if the listening socket fails.
        listen = self.sock
        poller = select.poll()
        poller.register(listen, select.POLLIN)
        waiting = []  # [socket, deadline]: accepted, not yet answered, oldest first
        try:
            while True:
                for sock, ev in poller.poll(_POLL_MS):
                    if sock is listen:
                        if ev & (select.POLLERR | select.POLLHUP):
                            raise OSError("the listening socket failed")
                        self._accept(poller, waiting)
                        continue
                    for w in waiting:
                        if w[0] is sock:
                            waiting.remove(w)
                            poller.unregister(sock)
                            self._exchange(sock, w[1])
                            break
                now = time.ticks_ms()
                for w in waiting[:]:  # silent since their accept: 408
                    if time.ticks_diff(now, w[1]) >= 0:
                        waiting.remove(w)
                        poller.unregister(w[0])
                        self._exchange(w[0], w[1])
        finally:
            for w in waiting:
                w[0].close()

    def _accept(self, poller, waiting):
        for _ in range(_SLOTS + 4):  # bounded: a flood of connects cannot keep it here
            try:
                conn, _ = self.sock.accept()
            except OSError:  # none left (EAGAIN), or one that failed on its way in
                return
            if len(waiting) < _SLOTS:
                waiting.append([conn, time.ticks_add(time.ticks_ms(), _REQUEST_MS)])
                poller.register(conn, select.POLLIN)
                continue
            self.turned_away += 1
            r = self.reader
            r.start(conn, 0)
            try:
                self._finish(conn, 503, error("SERVICE_UNAVAILABLE", "%d connections are "
                                              "already waiting; try again in a second"
                                              % _SLOTS),
                             None, _new_rid(), time.ticks_us(), b"Retry-After: 1\r\n")
                r.drain(LINE, _QUIET_MS, _QUIET_MS)  # its request, if it comes at once
            except OSError:  # gone already
                pass
            finally:
                r.end()
                conn.close()

    def _exchange(self, conn, deadline):
        # One connection: its request read, judged and answered, then closed.
        r = self.reader
        r.start(conn, deadline)
        rid = _new_rid()
        started = time.ticks_us()
        path = None
        headers = b""
        try:
            try:
                r.head()
                started = time.ticks_us()  # latencyMs: from the whole head to the answer
                path = r.target.split("?", 1)[0]
                status, body = self._dispatch(r, path, rid)
                if status == 0:  # the page, already written
                    return
            except Refused as e:
                if not e.status:
                    return
                status, body, headers = e.status, error(e.code, e.message), e.headers
                r.read = -1  # refused before all of it was read: drained below
            self._finish(conn, status, body, path, rid, started, headers)
            if r.unread():
                r.drain(4 * LINE, _DRAIN_MS, _QUIET_MS)
        except OSError:  # the client went away while it was answered
            pass
        finally:
            r.end()
            conn.close()

    def _dispatch(self, r, path, rid):
        # (status, body) for the request `r` has read; Refused for what the HTTP front
        # itself refuses. In the cloud's order (docs/cloud.md): the path (404, 405), the
        # token (401), the device (404), the body (411, 413), then the agent.
        method = r.method
        if method not in _METHODS:
            raise Refused(501, "NOT_IMPLEMENTED", "the method is not implemented: GET or POST")
        if path == "/":
            _only(method, "GET")
            self._page(r.conn)
            return 0, None
        if path.startswith(topics.ACTIONS):
            _only(method, "GET")
            self._check_token(r)
            return self.agent.action(_unquote(path[len(topics.ACTIONS):]))
        device, slash, tail = path[len(self.base):].partition("/")
        if not path.startswith(self.base) or not device:
            raise Refused(404, "NOT_FOUND", "no such path")
        tail = slash + tail
        route = None
        allowed = []
        for row in topics.ROUTES:
            if row[1] == tail:
                allowed.append(row[0])
                if row[0] == method:
                    route = row
        if not allowed:
            raise Refused(404, "NOT_FOUND", "no such path")
        if route is None:
            raise Refused(405, "METHOD_NOT_ALLOWED", "method not allowed on this path",
                          b"Allow: " + ", ".join(allowed).encode() + b"\r\n")
        self._check_token(r)
        if _unquote(device) != self.agent.device_id:
            raise Refused(404, "DEVICE_NOT_FOUND", "no charger %s here" % device[:64])
        body = b""
        if method == "POST":
            body = self._body(r)
        return self.agent.request(route[2], body, rid, self.board.now_ms())

    def _check_token(self, r):
        given = r.auth or b""
        if given[:7].lower() != b"bearer " or not same(given[7:].strip(), self.token):
            raise Refused(401, "UNAUTHORIZED", "a token is needed: Authorization: Bearer "
                          "<the charger's http.token>", _BEARER)
        self.agent.uplink_reached("http")  # an authorised request: reached (ota.md's validity)

    def _body(self, r):
        if r.chunked:
            raise Refused(411, "LENGTH_REQUIRED", "chunked bodies are not taken: send the "
                          "body with Content-Length")
        if r.length is None:
            raise Refused(411, "LENGTH_REQUIRED", "Content-Length is required")
        if r.length > MAX_PAYLOAD:
            raise Refused(413, "PAYLOAD_TOO_LARGE", "the body is larger than the charger "
                          "takes (%d bytes)" % MAX_PAYLOAD)
        if r.expect and r.length > r.have - r.pos:
            r.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # a few bytes: they fit
        return r.body()

    def _finish(self, conn, status, body, path, rid, started, headers=b""):
        # The answer: the status line, headers, and the envelope written as it is produced.
        meta = {"requestId": rid, "timestamp": self.agent.stamp(self.board.now_ms()),
                "path": path, "latencyMs": round(time.ticks_diff(time.ticks_us(), started)
                                                 / 1000, 2)}
        out = self._start(conn, status, _JSON + headers)
        json.dump(envelope(status, body, meta), out, separators=_COMPACT)
        out.send()
        self.answered += 1

    def _start(self, conn, status, headers):
        conn.settimeout(_WRITE_S)
        out = self.out.to(conn)
        reason = "Unknown"
        for code, text in _REASONS:
            if code == status:
                reason = text
        out.write(b"HTTP/1.1 %d %s\r\n" % (status, reason.encode()))
        out.write(headers)
        out.write(b"\r\n")
        return out

    def _page(self, conn):
        # GET /: the page from flash (http_page.py), with this charger's id in it.
        out = self._start(conn, 200, http_page.HEADERS)
        out.write(http_page.HEAD)
        out.write(_html(self.agent.device_id))
        out.write(http_page.TAIL)
        out.send()
        self.answered += 1


def _only(method, allowed):
    if method != allowed:
        raise Refused(405, "METHOD_NOT_ALLOWED", "method not allowed on this path",
                      b"Allow: " + allowed.encode() + b"\r\n")


def same(given, token):
    # Whether `given` is `token` (bytes), in a time that depends only on len(given), the
    # caller's own: every byte is compared, wherever the first difference is (http.md).
    diff = len(given) ^ len(token)
    n = len(token)
    for i in range(len(given)):
        diff |= given[i] ^ token[i % n]
    return diff == 0


def _new_rid():
    # meta.requestId of an HTTP answer: "req_" and 20 random hex digits, as the cloud's.
    return "req_" + binascii.hexlify(os.urandom(10)).decode()


def _unquote(text):
    # A path segment with its %XX escapes decoded; Refused(400) for a broken one.
    if "%" not in text:
        return text
    raw = text.encode()
    out = bytearray()
    i = 0
    try:
        while i < len(raw):
            if raw[i] == 37:  # %
                out.append(int(raw[i + 1:i + 3], 16))
                i += 3
            else:
                out.append(raw[i])
                i += 1
        return out.decode()
    except (ValueError, IndexError, UnicodeError):
        raise Refused(400, "INVALID_REQUEST", "a %-escape in the path is broken")


def _html(text):
    # `text` for an HTML attribute value in double quotes.
    out = text
    for ch, entity in (("&", "&amp;"), ('"', "&quot;"), ("<", "&lt;"), (">", "&gt;")):
        out = out.replace(ch, entity)
    return out.encode()
