# RSA signature verification for updates (docs/ota.md, "Trust"): RSASSA-PKCS1-v1_5 with
# SHA-256 (RFC 8017 8.2.2), on MicroPython's own big integers. The one correct encoding is
# built and compared whole, so every byte of the decrypted signature is checked and no
# parser of it exists to be fooled. Runs in the thread that handles an update request.
from binascii import a2b_base64, hexlify
from hashlib import sha256

E = 65537  # the public exponent of every key (what `cryptography` and OpenSSL generate):
# 2 ** 16 + 1, which public_power() is written for
MIN_BYTES = 384  # RSA-3072 (ota.md: 3072 bits or stronger)
MAX_BYTES = 512  # RSA-4096: bounds the work one request can ask for
# DER of DigestInfo(sha256, NULL) before the 32-byte hash: RFC 8017 9.2, note 1.
_SHA256_INFO = b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20"


class Key:
    # A public key as the config holds it: the modulus, big-endian, in base64. Its id is
    # the first 8 bytes of the modulus's SHA-256 in hex (what a manifest's "key" names).
    def __init__(self, text):
        try:
            raw = a2b_base64(text)
        except (ValueError, TypeError):
            raise ValueError("not base64")
        if not MIN_BYTES <= len(raw) <= MAX_BYTES or not raw[0] & 0x80 or not raw[-1] & 1:
            raise ValueError("not an RSA modulus of 3072 to 4096 bits")
        self.size = len(raw)
        self.n = int.from_bytes(raw, "big")
        self.id = key_id(raw)


def key_id(modulus):
    return hexlify(sha256(modulus).digest()[:8]).decode()


def verify(key, signature, digest):
    # True when `signature` (bytes) is `key`'s signature of the SHA-256 `digest`.
    k = key.size
    if len(signature) != k or len(digest) != 32:
        return False
    s = int.from_bytes(signature, "big")
    if s >= key.n:
        return False
    em = public_power(s, key.n).to_bytes(k, "big")
    return em == b"\x00\x01" + b"\xff" * (k - 54) + b"\x00" + _SHA256_INFO + digest


def public_power(s, n):
    # s ** 65537 % n as 16 squarings and a multiplication, one short C call each: on the
    # ESP32 (a GIL port) a single pow() is one C call that holds every other thread, the
    # control thread too, for the whole exponentiation; here each holds it a seventeenth.
    m = s
    for _ in range(16):
        m = pow(m, 2, n)
    return m * s % n
