# The app-bundle form (docs/ota.md, "The bundle"): for a board running the official image
# with the agent as .mpy files. The bundle, a POSIX ustar archive of .mpy files, is streamed
# to a staging file, read back and hashed, unpacked into the app folder not running, and
# compared with the archive; then one atomic write of the record switches the boot layer
# (ota_boot.app_path) to it. Network thread.
from micropython import const
import ota_boot
from ota_install import Install, Receiver, check_digest, digest_of
from ota_manifest import BAD_BUNDLE, HASH_MISMATCH, NO_SPACE, Refused, STORAGE

STAGING = "ota.tar"
_BLOCK = const(512)  # ustar's block
_SPARE_BYTES = const(65536)  # for the file system's own blocks (a file takes whole 4 KB ones)
_DIR = const(0x4000)  # stat()[0]: S_IFDIR
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"


def _octal(field):
    text = bytes(field).rstrip(b"\0 ").lstrip(b" ")
    if not text or text.strip(b"01234567"):
        raise Refused(BAD_BUNDLE, "a header number is not octal")
    return int(text.decode(), 8)


def _name_ok(name):
    # At most one folder deep (umqtt/simple.mpy), plain names only: nothing can point
    # outside the app folder, hide, or name a folder "..".
    parts = name.split("/")
    if len(parts) > 2:
        return False
    for p in parts:
        if not p or p[0] == "." or p.strip(_NAME_CHARS):
            return False
    return True


def header(buf):
    # (name, size) of the ustar member whose header is `buf` (512 bytes), size -1 for a
    # folder; None for the zero block that ends the archive; Refused for anything else.
    if not any(buf):
        return None
    if buf[257:263] != b"ustar\0" or buf[263:265] != b"00":
        raise Refused(BAD_BUNDLE, "not a POSIX ustar archive")
    if _octal(buf[148:156]) != sum(buf) - sum(buf[148:156]) + 8 * 32:
        raise Refused(BAD_BUNDLE, "a header checksum does not match")
    if any(buf[345:500]):
        raise Refused(BAD_BUNDLE, "a name longer than 100 characters")
    name = bytes(buf[:100]).split(b"\0")[0].decode()
    size = _octal(buf[124:136])
    kind = buf[156]
    if kind == 0x35 and size == 0 and name.endswith("/") and _name_ok(name[:-1]):  # "5"
        return name[:-1], -1
    if kind not in (0, 0x30) or not name.endswith(".mpy") or not _name_ok(name):  # "0"
        raise Refused(BAD_BUNDLE, "member %r: only .mpy files and folders" % name)
    return name, size


def _read_block(f, buf):
    if f.readinto(buf) != _BLOCK:
        raise Refused(BAD_BUNDLE, "the archive ends inside a member")


def clear(fs, path):
    # Remove a folder and everything in it; nothing if it is not there.
    try:
        names = fs.listdir(path)
    except OSError:
        return
    for name in names:
        p = ota_boot.join(path, name)
        if fs.stat(p)[0] & _DIR:
            clear(fs, p)
        else:
            fs.remove(p)
    fs.rmdir(path)


def _remove(fs, path):
    try:
        fs.remove(path)
    except OSError:
        pass


class _Staging:
    # The Receiver's writer: the archive as it arrives, in a file.
    def __init__(self, fs, path, size):
        self.fs = fs
        self.path = path
        self.size = size
        self.file = fs.open(path, "wb")

    def write(self, chunk):
        self.file.write(chunk)

    def finish(self, sha256):
        self.file.close()
        with self.fs.open(self.path, "rb") as f:
            check_digest(digest_of(f.readinto, self.size, bytearray(_BLOCK)), sha256,
                         "the staged bundle")


class BundleInstall(Install):
    def __init__(self, manifest, root, fs=ota_boot.FS):
        super().__init__(manifest, root, fs)
        # The folder running now stays untouched; the new version goes into the other one.
        self.good = ota_boot.bundle_boot(self.rec)[0]
        self.slot = ota_boot.FOLDERS[1 if self.good == ota_boot.FOLDERS[0] else 0]
        self.path = ota_boot.join(root, self.slot)
        self.staging = ota_boot.join(root, STAGING)
        try:
            clear(fs, self.path)  # what an earlier, unfinished or rolled-back update left
            _remove(fs, self.staging)
            st = fs.statvfs(root)
            need = 2 * manifest.size + _SPARE_BYTES  # the archive and its unpacked files
            if st[1] * st[4] < need:
                raise Refused(NO_SPACE, "%d bytes free, the bundle needs %d"
                              % (st[1] * st[4], need))
            fs.mkdir(self.path)
            self._staged = _Staging(fs, self.staging, manifest.size)
            self.receiver = Receiver(manifest, self._staged)
        except OSError as e:
            raise Refused(STORAGE, "preparing %s: %r" % (self.slot, e))

    def finish(self):
        super().finish()  # all of it arrived, and the staged file hashes as signed
        try:
            self._unpack(False)
            self._unpack(True)  # what the folder holds now is what was signed
            self.fs.remove(self.staging)
        except OSError as e:
            raise Refused(STORAGE, "unpacking into %s: %r" % (self.slot, e))

    def _unpack(self, compare):
        fs = self.fs
        buf = bytearray(_BLOCK)
        other = bytearray(_BLOCK)
        with fs.open(self.staging, "rb") as src:
            while True:
                _read_block(src, buf)
                member = header(buf)
                if member is None:
                    return
                name, size = member
                path = ota_boot.join(self.path, name)
                if not compare and (size < 0 or "/" in name):
                    self._folder(name.split("/")[0])
                if size < 0:
                    continue
                with fs.open(path, "rb" if compare else "wb") as dst:
                    while size:
                        _read_block(src, buf)
                        n = min(size, _BLOCK)
                        if not compare:
                            dst.write(memoryview(buf)[:n])
                        elif dst.readinto(memoryview(other)[:n]) != n or other[:n] != buf[:n]:
                            raise Refused(HASH_MISMATCH, "%s read back differs" % name)
                        size -= n
                    if compare and dst.read(1):
                        raise Refused(HASH_MISMATCH, "%s read back is longer" % name)

    def _folder(self, name):
        path = ota_boot.join(self.path, name)
        try:
            self.fs.stat(path)
        except OSError:
            self.fs.mkdir(path)

    def activate(self, running):
        # The switch: one atomic write of the record. The folder that ran stays as it is,
        # the fallback (None: the deployed /lib).
        self._record(ota_boot.BUNDLE, self.slot, self.good, running)

    def abort(self):
        # After a refusal: the staging file and the half-filled folder go (best effort).
        try:
            self._staged.file.close()
            _remove(self.fs, self.staging)
            clear(self.fs, self.path)
        except OSError:
            pass
