# What may be echoed from a request into a reply: printable ASCII only, so a reply is valid
# UTF-8 whatever came in (MicroPython keeps a lone "\ud800" escape as invalid bytes); what
# may be parsed (shallow); the error bodies (error and the builders after it); and replies
# and state reports as JSON written as it is produced (envelope, JsonBody, Out), small
# records as JSON bytes (json_bytes). The uplinks' threads (and the bench's) call these.
import gc
import io
import json


def printable(value, limit=64):
    # True for a str of 1..limit printable ASCII characters.
    if type(value) is not str or not 0 < len(value) <= limit:
        return False
    for ch in value:
        if not " " <= ch <= "~":
            return False
    return True


def text(value, limit=64):
    # `value` if printable(value, limit), else None.
    return value if printable(value, limit) else None


def error(code, message, details=None):
    # The body of every refusal the API sends (docs/protocol.md), built here only: a code,
    # a sentence, and details ({} when there are none).
    return {"code": code, "message": message, "details": details or {}}


def envelope(status, body, meta):
    # Every reply's envelope (charger-api.md, http.md), built here only: {success, data,
    # meta} below 300, else {success: false, error, meta}.
    if status < 300:
        return {"success": True, "data": body, "meta": meta}
    return {"success": False, "error": body, "meta": meta}


def invalid(message):
    # 400 INVALID_REQUEST's body: not a request the API takes.
    return error("INVALID_REQUEST", message)


def setting_error(key, code, message, details=None):
    # One failing setting of a write, as details.errors lists it.
    return {"setting": key, "code": code, "message": message, "details": details or {}}


def refused_settings(errors):
    # The body of a write refused for its settings (setting_error()s, the first failing
    # first): the first one's code, its message with the setting's name, all of them.
    first = errors[0]
    return error(first["code"], first["setting"] + ": " + first["message"], {"errors": errors})


def shallow(payload, deep=8, most=32):
    # Whether json.loads may take `payload` (bytes) without a heap's worth of objects: at
    # most `most` objects and arrays in all, nested at most `deep`. On a 56 KB heap,
    # b"[" * 2000 (within the 2 KB bound) needs more than 40 KB parsed and starved the
    # control thread; the largest request the API takes has 4 levels and 4 containers.
    depth = count = 0
    quoted = escaped = False
    for b in payload:
        if quoted:
            if escaped:
                escaped = False
            elif b == 92:  # \
                escaped = True
            elif b == 34:  # "
                quoted = False
        elif b == 34:
            quoted = True
        elif b == 91 or b == 123:  # [ {
            depth += 1
            count += 1
            if depth > deep or count > most:
                return False
        elif b == 93 or b == 125:  # ] }
            depth -= 1
    return True


def json_bytes(obj):
    # A small `obj` (an event, the action journal) as JSON bytes, once more after a
    # collection if the heap has no room for the text in one piece; a MemoryError after that
    # is the caller's to turn into a refusal (a journal that meets no heap is a storage
    # failure: persist.refused).
    try:
        return json.dumps(obj).encode()
    except MemoryError:
        gc.collect()
        return json.dumps(obj).encode()


class JsonBody:
    # `obj` (a reply, a state report) as JSON that is written as it is produced: json.dump
    # hands its pieces to an Out, which gathers them in a small buffer for the stream. len()
    # is a counting pass (MQTT announces a message's length before its body), write_to()
    # the writing pass; `obj` is the snapshot both passes read, so nothing in it may change
    # after it is built. At the ESP32's 56 KB heap a device read's text (1-3 KB, and a
    # second copy while json.dumps grows it) found no block on a fragmented heap (issue 22)
    # and was most of the MQTT uplink's peak (docs/performance.md); json.dump into an Out
    # allocates nothing per piece, and the writer's own Out (one per connection) no buffer
    # per body. compact: no spaces after , and : (the HTTP front's, as the cloud writes its
    # bodies).
    def __init__(self, obj, compact=False):
        self.obj = obj
        self.separators = _COMPACT if compact else _SPACED
        self.size = -1

    def __len__(self):
        if self.size < 0:
            count = Out(None, 0)
            json.dump(self.obj, count, separators=self.separators)
            self.size = count.written
        return self.size

    def write_to(self, stream, out=None):
        # Into `stream`, once, through `out` (the writer's Out; a new one without it). Once
        # len() was asked, exactly that many bytes: were the text to come out otherwise (a
        # bug: something in the snapshot changed), it is cut or padded with spaces, so an
        # MQTT connection never loses its framing; it is logged. Written, the body lets go
        # of its snapshot: the collector is conservative and scans every thread's stack,
        # where a stale word can still point at a body long sent; the MQTT uplink's thread
        # kept its last state report so, and with it the whole device read (1.3 KB of the
        # live heap at 32 bits, make bench).
        out = (Out(None) if out is None else out).to(stream, self.size)
        json.dump(self.obj, out, separators=self.separators)
        if self.size >= 0 and out.written != self.size:
            print("api: a body changed between its passes (%d, then %d bytes)" %
                  (self.size, out.written))
            while out.left > 0:
                out.write(b" ")
        out.send()
        self.obj = None


_SPACED = (", ", ": ")  # json.dumps' own separators: the MQTT replies' and reports'
_COMPACT = (",", ":")
_BUF = 256  # bytes gathered per write to the stream


class Out(io.IOBase):
    # A stream's writer for json.dump and an uplink's own bytes: what is written is gathered
    # in `buf` and goes to `stream` a buffer at a time (one socket write, not one per piece
    # of JSON); without a stream it is only counted. An io.IOBase, so that MicroPython's
    # json.dump takes it as a stream: it then calls write() with each piece in a buffer on
    # the C stack, so writing allocates nothing. `written` counts the bytes; with a `size`
    # (>= 0) no more than that many go out, and `left` says how many are still due.
    def __init__(self, stream, size=_BUF):
        self.buf = bytearray(size)
        self.stream = stream
        self.used = 0
        self.written = 0
        self.left = -1

    def to(self, stream, size=-1):
        self.stream = stream
        self.used = 0
        self.written = 0
        self.left = size
        return self

    def write(self, data):
        if type(data) is str:  # CPython's json.dump writes str (ASCII: ensure_ascii)
            data = data.encode()
        n = len(data)
        self.written += n
        if self.left >= 0:
            if n > self.left:
                data = data[:self.left]
            self.left -= len(data)
        if self.stream is not None:
            k = len(data)
            if self.used + k > len(self.buf):
                self.send()
                if k > len(self.buf):
                    self.stream.write(data)
                    return n
            self.buf[self.used:self.used + k] = data
            self.used += k
        return n

    def send(self):
        # What is gathered, to the stream (at the end of a body, and when the buffer fills).
        if self.used:
            self.stream.write(memoryview(self.buf)[:self.used])
            self.used = 0
