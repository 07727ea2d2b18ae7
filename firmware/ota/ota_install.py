# An update being received and installed, the steps both forms share (docs/ota.md): the
# bytes arrive in small chunks, as the download delivers them, and are counted against the
# signed size, hashed and handed to the form's writer (the other app partition, or the
# bundle's staging file), so the payload is never whole in RAM; then the writer reads back
# what flash holds. Nothing is installed while a new version is still on trial. Network
# thread.
from hashlib import sha256
import ota_boot
from ota_manifest import Refused, HASH_MISMATCH, NOT_VALID_YET, SIZE_MISMATCH, STORAGE


class Receiver:
    def __init__(self, manifest, sink):
        # sink: write(chunk), and finish(sha256): reads back what it wrote and checks it.
        self.manifest = manifest
        self.sink = sink
        self.left = manifest.size
        self._hash = sha256()

    def write(self, chunk):
        if len(chunk) > self.left:
            raise Refused(SIZE_MISMATCH, "more than the %d bytes signed" % self.manifest.size)
        self._hash.update(chunk)
        self.left -= len(chunk)
        try:
            self.sink.write(chunk)
        except OSError as e:
            raise Refused(STORAGE, "writing the update: %r" % e)

    def finish(self):
        if self.left:
            raise Refused(SIZE_MISMATCH, "%d bytes short of the %d signed"
                          % (self.left, self.manifest.size))
        if self._hash.digest() != self.manifest.sha256:
            raise Refused(HASH_MISMATCH, "the download does not hash as signed")
        try:
            self.sink.finish(self.manifest.sha256)
        except OSError as e:
            raise Refused(STORAGE, "reading the update back: %r" % e)


class Install:
    # write() each chunk, finish() (verified: ready), activate() (a restart boots it).
    def __init__(self, manifest, root, fs):
        rec = ota_boot.read(fs, root)
        if type(rec) is dict and rec["state"] == ota_boot.TRIAL:
            raise Refused(NOT_VALID_YET, "the running %s is still on trial" % rec["version"])
        self.manifest = manifest
        self.root = root
        self.fs = fs
        self.rec = rec  # the record as it was before this update
        self.receiver = None  # the form's Receiver, over its writer

    def write(self, chunk):
        self.receiver.write(chunk)

    def receive(self, stream, buf):
        # All that `stream` (a file, a download's socket) delivers, a `buf` at a time.
        view = memoryview(buf)
        while True:
            n = stream.readinto(buf)
            if not n:
                return
            self.write(view[:n])

    def finish(self):
        self.receiver.finish()

    def _record(self, form, slot, good, running):
        # The trial begins with this one write (for a bundle, it is the switch itself).
        ota_boot.write(self.fs, self.root, {
            "form": form, "state": ota_boot.TRIAL, "version": self.manifest.version,
            "previous": running, "slot": slot, "good": good, "boots": 0, "reason": None})


def digest_of(read_into, size, buf):
    # SHA-256 of the first `size` bytes that read_into(buf) delivers, a buffer at a time.
    h = sha256()
    view = memoryview(buf)
    while size:
        n = min(size, len(buf))
        if read_into(buf) < n:
            raise OSError("short read")
        h.update(view[:n])
        size -= n
    return h.digest()


def check_digest(got, expected, what):
    if got != expected:
        raise Refused(HASH_MISMATCH, "%s read back does not hash as signed" % what)
