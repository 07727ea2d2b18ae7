# What may be echoed from a request into a reply: printable ASCII only, so a reply is valid
# UTF-8 whatever came in (MicroPython keeps a lone "\ud800" escape as invalid bytes); what
# may be parsed (shallow); the error bodies (error and the builders after it); and replies
# built as bytes (json_bytes).
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
