# What may be echoed from a request into a reply: printable ASCII only, so a reply is valid
# UTF-8 whatever came in (MicroPython keeps a lone "\ud800" escape as invalid bytes); what
# may be parsed (shallow); the error bodies (error and the builders after it); and replies
# and state reports as JSON written as it is produced (envelope, JsonBody, Out), small
# records as JSON bytes (json_bytes). The uplinks' threads (and the bench's) call these.
import gc
import io
import json

from micropython import const


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


# json_fault's answers: 0 when json.loads may take the payload.
BAD_JSON = const(1)  # not JSON (RFC 8259)
TOO_NESTED = const(2)  # more objects and arrays, or deeper, than the API takes

# json_fault's states. Between tokens:
_VALUE = const(0)  # a value must come: at the start, after ":", after "," in an array
_FIRST = const(1)  # after "[": a value or "]"
_KEY = const(2)  # after "," in an object: a key
_KEY_FIRST = const(3)  # after "{": a key or "}"
_COLON = const(4)  # after a key
_AFTER = const(5)  # after a value: ",", a closing bracket, or (at the top) the end
# inside a token:
_STR = const(6)
_ESC = const(7)  # after a backslash
_HEX = const(8)  # in the 4 digits of \uXXXX
_WORD = const(9)  # in true, false or null
# in a number, -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?: still wanting a digit
_SIGN = const(10)
_DOT = const(11)
_E = const(12)
_E_SIGN = const(13)
# or complete so far (a number ends at the first byte that cannot continue it)
_ZERO = const(14)
_INT = const(15)
_FRAC = const(16)
_EXP = const(17)

_WORDS = b"true false null "  # json_fault reads a literal from its first letter to the space


def json_fault(payload, deep=8, most=32):
    # 0 if json.loads may take `payload` (bytes): JSON by RFC 8259's grammar, with at most
    # `most` objects and arrays in all, nested at most `deep`; else BAD_JSON or TOO_NESTED,
    # whichever the first byte past the bounds meets. One pass over the bytes, allocating
    # nothing (the open containers are bits of a small int: 1 an object, 0 an array).
    # The grammar: MicroPython's json.loads takes {"a":1,}, {"a" 1}, 07 and a trailing NUL
    # that CPython's refuses, and the charger applied them (docs/protocol.md: 400). The
    # bounds: on a 56 KB heap, b"[" * 2000 (within the 2 KB bound) needs more than 40 KB
    # parsed and starved the control thread; the largest request the API takes has 4 levels
    # and 4 containers. Stricter than CPython's json.loads: no NaN or Infinity, no BOM, no
    # UTF-16 or UTF-32 (bytes >= 0x80 pass inside strings; json.loads judges their UTF-8).
    depth = count = stack = hexes = word = 0
    state = _VALUE
    ends = _AFTER  # the state after the string being read: _COLON for a key
    for b in payload:
        if state == _STR:
            if b == 34:  # "
                state = ends
            elif b == 92:  # \
                state = _ESC
            elif b < 32:
                return BAD_JSON
            continue
        if state == _ESC:
            if b == 117:  # u
                state = _HEX
                hexes = 4
            elif b in b'"\\/bfnrt':
                state = _STR
            else:
                return BAD_JSON
            continue
        if state == _HEX:
            if not (48 <= b <= 57 or 97 <= (b | 32) <= 102):  # 0-9 a-f A-F
                return BAD_JSON
            hexes -= 1
            if not hexes:
                state = _STR
            continue
        if state == _WORD:
            if b != _WORDS[word]:
                return BAD_JSON
            word += 1
            if _WORDS[word] == 32:
                state = _AFTER
            continue
        if state >= _SIGN:
            if 48 <= b <= 57:
                if state == _SIGN:
                    state = _ZERO if b == 48 else _INT
                elif state == _DOT:
                    state = _FRAC
                elif state == _E or state == _E_SIGN:
                    state = _EXP
                elif state == _ZERO:  # 07
                    return BAD_JSON
                continue
            if b == 46 and (state == _ZERO or state == _INT):  # .
                state = _DOT
                continue
            if (b | 32) == 101 and (state == _ZERO or state == _INT or state == _FRAC):  # e E
                state = _E
                continue
            if (b == 43 or b == 45) and state == _E:  # + -
                state = _E_SIGN
                continue
            if state < _ZERO:
                return BAD_JSON
            state = _AFTER  # the number ended: `b` is the next token's
        if b == 32 or b == 10 or b == 13 or b == 9:
            continue
        if state == _AFTER:
            if b == 44 and depth:  # ,
                state = _KEY if stack & 1 else _VALUE
                continue
        elif state == _COLON:
            if b == 58:  # :
                state = _VALUE
                continue
            return BAD_JSON
        elif state >= _KEY:  # _KEY, _KEY_FIRST
            if b == 34:
                state = _STR
                ends = _COLON
                continue
            if state == _KEY:
                return BAD_JSON
        elif b == 34:  # _VALUE, _FIRST
            state = _STR
            ends = _AFTER
            continue
        elif b == 123 or b == 91:  # { [
            depth += 1
            count += 1
            if depth > deep or count > most:
                return TOO_NESTED
            stack = stack << 1 | (1 if b == 123 else 0)
            state = _KEY_FIRST if b == 123 else _FIRST
            continue
        elif b == 45:  # -
            state = _SIGN
            continue
        elif 48 <= b <= 57:
            state = _ZERO if b == 48 else _INT
            continue
        elif b == 116 or b == 102 or b == 110:  # t f n
            state = _WORD
            word = 1 if b == 116 else 6 if b == 102 else 12
            continue
        # what is left: a closing bracket, after a value or opening an empty container
        if depth and state != _VALUE and b == (125 if stack & 1 else 93):
            depth -= 1
            stack >>= 1
            state = _AFTER
            continue
        return BAD_JSON
    return 0 if (state == _AFTER or state >= _ZERO) and not depth else BAD_JSON


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
