# How persisted values look in flash, so a torn or corrupt one is recognised and never
# read as a value. Small values are 4-byte words (3 bytes of value, a CRC-8), which a board
# may store natively (an ESP32 NVS i32 entry: 32 bytes of flash per write); anything larger
# is a blob: the bytes, a newline and their CRC32 in 8 hex digits.
from binascii import crc32

WORD_MAX = 0xFFFFFF
CORRUPT = -1  # what the readers return for a value that fails its check


def _crc8(data):
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc << 1 ^ 0x07 if crc & 0x80 else crc << 1) & 0xFF
    return crc


def word(value):
    body = bytes((value >> 16 & 0xFF, value >> 8 & 0xFF, value & 0xFF))
    return body + bytes((_crc8(body),))


def unword(data):
    # The value, None when there is none, CORRUPT when it fails its check.
    if data is None:
        return None
    if len(data) != 4 or _crc8(data[:3]) != data[3]:
        return CORRUPT
    return data[0] << 16 | data[1] << 8 | data[2]


def blob(body):
    return body + b"\n%08x" % (crc32(body) & 0xFFFFFFFF)


def unblob(data):
    # The body, None when there is none, CORRUPT when it fails its check.
    if data is None:
        return None
    if len(data) < 10 or data[-9:-8] != b"\n":
        return CORRUPT
    body = data[:-9]
    try:
        if int(data[-8:], 16) == crc32(body) & 0xFFFFFFFF:
            return body
    except ValueError:
        pass
    return CORRUPT
