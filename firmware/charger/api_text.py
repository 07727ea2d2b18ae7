# What may be echoed from a request into a reply: printable ASCII only, so a reply is valid
# UTF-8 whatever came in (MicroPython keeps a lone "\ud800" escape as invalid bytes); what
# may be parsed (shallow); the error bodies (error and the builders after it); and replies
# and state reports as JSON bytes (json_bytes), or a reply in pieces where the heap has no
# block for its text (json_body). The uplink's thread (and the bench's) calls these.
import gc
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
    # `obj` as JSON bytes, once more after a collection if the heap has no room for the text
    # in one piece: at the ESP32's 56 KB first heap a read or a state report (about 1.1 KB)
    # met a fragmented heap during a burst of requests, and the MemoryError cost the uplink
    # its connection and the queued requests their replies.
    try:
        return json.dumps(obj).encode()
    except MemoryError:
        gc.collect()
        return json.dumps(obj).encode()


def json_body(obj):
    # A reply (which cannot wait, unlike a state report) as a message body: json_bytes(obj),
    # or where the heap has no block that large even after a collection, a JsonBody. At the
    # ESP32's 56 KB first heap, MQTT, a site and about 35 requests a second left 25 KB free
    # but no 2 KB block: a read's reply (2-3 KB) failed, and each MemoryError cost the uplink
    # its connection and the queued requests their replies (issue 22).
    try:
        return json_bytes(obj)
    except MemoryError:
        return JsonBody(obj)


class JsonBody:
    # `obj` as JSON that is never held whole: len() is its size in bytes, write_to(stream)
    # writes it, each of two passes over json_pieces; the pieces go out gathered _BUF bytes
    # at a time. The same text as json.dumps(obj), at about 5x its time. mqtt_client.py's
    # publish() and the bench's link take it in place of bytes.
    def __init__(self, obj):
        self.obj = obj
        self.size = 0
        self.out = None
        json_pieces(obj, self._put)

    def __len__(self):
        return self.size

    def write_to(self, stream):
        self.out = stream
        self.buf = bytearray(_BUF)
        self.used = 0
        json_pieces(self.obj, self._put)
        stream.write(memoryview(self.buf)[:self.used])

    def _put(self, piece):
        data = piece.encode()
        n = len(data)
        if self.out is None:  # the first pass: the size
            self.size += n
            return
        if self.used + n > _BUF:
            self.out.write(memoryview(self.buf)[:self.used])
            self.used = 0
            if n > _BUF:
                self.out.write(data)
                return
        self.buf[self.used:self.used + n] = data
        self.used += n


_BUF = 256


def json_pieces(obj, emit):
    # json.dumps(obj) handed to emit(str) piece by piece: a key, a separator, a scalar or a
    # container of scalars (a transition, a setting), each under 200 bytes in a read's reply.
    t = type(obj)
    if t is dict or t is list or t is tuple:
        for value in (obj.values() if t is dict else obj):
            t2 = type(value)
            if t2 is dict or t2 is list or t2 is tuple:
                break
        else:  # scalars only: one piece
            emit(json.dumps(obj))
            return
        sep = "{" if t is dict else "["
        for item in obj:
            emit(sep)
            if t is dict:  # the key, then its value
                emit(json.dumps(item))
                emit(": ")
                item = obj[item]
            json_pieces(item, emit)
            sep = ", "
        emit("}" if t is dict else "]")
    else:
        emit(json.dumps(obj))
