# The signed manifest of an update (docs/ota.md, "The manifest"): its format, and every
# check that refuses an update before a byte of it is written, each with its reason.
# Network thread (the update request), or the host tool that signs a release.
import json
from binascii import a2b_base64, unhexlify
from hashlib import sha256
import ota_rsa

MAX_BYTES = 512  # a manifest is about 160 bytes
MAX_PAYLOAD_BYTES = 1 << 24  # 16 MiB: more than any partition or bundle an ESP32 holds
KINDS = ("image", "bundle")
FIELDS = ("downgrade", "key", "kind", "sha256", "size", "version")  # exactly these

# Reasons an update is refused or fails (update.failed's `reason`).
BAD_MANIFEST = "bad_manifest"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"
WRONG_KIND = "wrong_kind"
DOWNGRADE = "downgrade"
TOO_LARGE = "too_large"
SIZE_MISMATCH = "size_mismatch"
HASH_MISMATCH = "hash_mismatch"
BAD_BUNDLE = "bad_bundle"
NOT_VALID_YET = "not_valid_yet"  # the running version is still on trial
NO_SPACE = "no_space"
NOT_BOOTABLE = "not_bootable"  # ESP-IDF's own check of the image refused it (set_boot)
STORAGE = "storage"  # flash failed
DOWNLOAD_FAILED = "download_failed"  # the server refused, failed or went silent (updater.py)


class Refused(Exception):
    def __init__(self, reason, detail):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


class Manifest:
    def __init__(self, fields):
        self.version = fields["version"]
        self.kind = fields["kind"]
        self.size = fields["size"]
        self.sha256 = unhexlify(fields["sha256"])
        self.downgrade = fields["downgrade"]
        self.key = fields["key"]


def version(text):
    # (major, minor, patch) of "1.2.3" (decimal, no sign or leading zero), else None.
    parts = text.split(".") if type(text) is str else ()
    if len(parts) != 3:
        return None
    for p in parts:
        if not p or len(p) > 6 or not _digits(p) or (len(p) > 1 and p[0] == "0"):
            return None
    return tuple(int(p) for p in parts)


def _digits(text, alphabet="0123456789"):
    for c in text:
        if c not in alphabet:
            return False
    return True


def parse(text):
    # The Manifest in `text` (bytes exactly as signed), or Refused(BAD_MANIFEST).
    if type(text) is not bytes or len(text) > MAX_BYTES:
        raise Refused(BAD_MANIFEST, "not text of at most %d bytes" % MAX_BYTES)
    # One flat object: nothing nests, so no bracket reaches the parser's recursion.
    if text.count(b"{") != 1 or b"[" in text:
        raise Refused(BAD_MANIFEST, "not one flat JSON object")
    try:
        fields = json.loads(text)
    except ValueError:
        raise Refused(BAD_MANIFEST, "not JSON")
    if type(fields) is not dict or sorted(fields) != list(FIELDS):
        raise Refused(BAD_MANIFEST, "fields must be exactly " + ", ".join(FIELDS))
    f = fields
    hexdigits = "0123456789abcdef"
    for bad, what in (
            (version(f["version"]) is None, "version must be MAJOR.MINOR.PATCH"),
            (f["kind"] not in KINDS, "kind must be image or bundle"),
            (type(f["size"]) is not int or not 0 < f["size"] <= MAX_PAYLOAD_BYTES,
             "size must be 1 to %d bytes" % MAX_PAYLOAD_BYTES),
            (type(f["sha256"]) is not str or len(f["sha256"]) != 64
             or not _digits(f["sha256"], hexdigits), "sha256 must be 64 lowercase hex digits"),
            (type(f["downgrade"]) is not bool, "downgrade must be true or false"),
            (type(f["key"]) is not str or len(f["key"]) != 16 or not _digits(f["key"], hexdigits),
             "key must be 16 lowercase hex digits")):
        if bad:
            raise Refused(BAD_MANIFEST, what)
    return Manifest(f)


def keys(texts):
    # {key id: ota_rsa.Key} of the config's public keys (ValueError names a bad one).
    out = {}
    for i, text in enumerate(texts):
        try:
            k = ota_rsa.Key(text)
        except ValueError as e:
            raise ValueError("ota.keys[%d]: %s" % (i, e))
        out[k.id] = k
    return out


def check(text, signature, trusted, kind, running):
    # The Manifest of an update this charger may install, or Refused with the reason.
    # `text`: the manifest as signed (str or bytes); `signature`: base64; `trusted`: keys();
    # `kind`: the form this charger takes; `running`: the running version ("0.2.0").
    if type(text) is str:
        text = text.encode()
    m = parse(text)
    key = trusted.get(m.key)
    if key is None:
        raise Refused(UNKNOWN_KEY, "signed with key %s, which this charger does not hold" % m.key)
    try:
        raw = a2b_base64(signature)
    except (ValueError, TypeError):
        raw = b""
    if not ota_rsa.verify(key, raw, sha256(text).digest()):
        raise Refused(BAD_SIGNATURE, "the signature does not match the manifest and key %s"
                      % m.key)
    if m.kind != kind:
        raise Refused(WRONG_KIND, "a %s, but this charger takes a %s" % (m.kind, kind))
    if version(m.version) <= version(running) and not m.downgrade:
        raise Refused(DOWNGRADE, "%s is not newer than the running %s" % (m.version, running))
    return m
