# The persisted record: the cap and the pause flag, as JSON behind a CRC32, so a torn or
# corrupt record is recognised and never read as a value.
import json
from binascii import crc32

KEY = "charger"


def encode(cap_w, paused):
    body = json.dumps({"cap_w": cap_w, "paused": bool(paused)}).encode()
    return body + b"\n%08x" % (crc32(body) & 0xFFFFFFFF)


def decode(data):
    # (cap_w, paused) from a stored record, or None if it is missing or corrupt.
    if not data or len(data) < 10 or data[-9:-8] != b"\n":
        return None
    body = data[:-9]
    try:
        if int(data[-8:], 16) != crc32(body) & 0xFFFFFFFF:
            return None
        rec = json.loads(body)
        cap_w = rec["cap_w"]
        paused = rec["paused"]
    except (ValueError, KeyError, TypeError):
        return None
    if type(cap_w) is not int or not 0 <= cap_w <= 50000:
        return None
    if type(paused) is not bool:
        return None
    return cap_w, paused
