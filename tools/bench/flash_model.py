"""Simulated flash that can lose power at any byte: the bench's power-cut injector.

CuttableFlash stands in for a board's file system (boards/sim.FileStore's open and rename,
and the OTA modules' file system: firmware/ota/ota_boot.LocalFs). It keeps files in memory
and, after `budget` more units, raises PowerCut, leaving the file being written torn
exactly there. A unit is a byte written, or one file-system operation (rename, remove,
mkdir, rmdir), which happens whole or not at all: rename is atomic, as on littlefs and
POSIX.

EspFlash is the ESP32's flash in MicroPython's OTA layout (otadata and two app partitions,
ports/esp32/partitions-4MiB-ota.csv, smaller here), with what ESP-IDF does to it: NOR
writes that only clear bits, sector erases, otadata entries as esp_ota_ops.c writes them,
and the bootloader's choice at power-on with app rollback on (bootloader_utility.c).
partition_class() gives an esp32.Partition over it. Power cuts share the CuttableFlash's
budget, so one sweep cuts the file system and the partitions alike.

Plain Python that MicroPython runs too: the OTA tests use it under both interpreters.
"""
import binascii
import hashlib


class PowerCut(BaseException):  # not an error the firmware could catch: the power is gone
    pass


_ENOENT = 2
_EEXIST = 17
_ENOTDIR = 20
_ENOTEMPTY = 39
_ENOSPC = 28


class _Writer:
    def __init__(self, fs, path):
        self.fs = fs
        self.path = path
        fs.files[path] = b""

    def write(self, data):
        data = bytes(data)
        fs = self.fs
        if fs.capacity is not None and fs.used() + len(data) > fs.capacity:
            raise OSError(_ENOSPC)
        n = fs.allow(len(data))
        if self.path == fs.worn and n and not fs.files[self.path]:
            data = bytes((data[0] ^ 1,)) + data[1:]  # lands, but reads back wrong
        fs.files[self.path] += data[:n]
        if n < len(data):
            raise PowerCut()
        return len(data)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def read(self, n=-1):
        end = len(self.data) if n is None or n < 0 else self.pos + n
        out = self.data[self.pos:end]
        self.pos += len(out)
        return out

    def readinto(self, buf):
        out = self.read(len(buf))
        buf[:len(out)] = out
        return len(out)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class CuttableFlash:
    def __init__(self, root="/flash", capacity=None):
        self.files = {}
        self.dirs = {root}  # the mount point exists; every other folder is made by mkdir
        self.capacity = capacity  # bytes of file data it holds, None: unbounded
        self.budget = None  # units that may still complete before the power goes
        self.spent = 0  # units completed since created (a dry run sizes a sweep with it)
        self.log = None  # a list: (first unit, units) of every step, to cut at each
        self.worn = None  # a path whose first byte is written with a bit flipped
        self.renames = 0

    def allow(self, n):
        """How many of n units complete before the power goes (the caller cuts after)."""
        if self.log is not None:
            self.log.append((self.spent, n))
        if self.budget is not None:
            n = min(n, self.budget)
            self.budget -= n
        self.spent += n
        return n

    def _op(self):
        if self.allow(1) < 1:
            raise PowerCut()

    def used(self):
        return sum(len(d) for d in self.files.values())

    def _parent(self, path):
        return path[:path.rindex("/")] if "/" in path[1:] else "/"

    def open(self, path, mode="rb"):
        if "w" in mode:
            if self._parent(path) not in self.dirs or path in self.dirs:
                raise OSError(_ENOENT)
            return _Writer(self, path)
        if path not in self.files:
            raise OSError(_ENOENT)
        return _Reader(self.files[path])

    def rename(self, src, dst):
        if src not in self.files or self._parent(dst) not in self.dirs:
            raise OSError(_ENOENT)
        self._op()
        self.files[dst] = self.files.pop(src)
        self.renames += 1

    def remove(self, path):
        if path not in self.files:
            raise OSError(_ENOENT)
        self._op()
        del self.files[path]

    def mkdir(self, path):
        if path in self.dirs or path in self.files:
            raise OSError(_EEXIST)
        if self._parent(path) not in self.dirs:
            raise OSError(_ENOENT)
        self._op()
        self.dirs.add(path)

    def rmdir(self, path):
        if path not in self.dirs:
            raise OSError(_ENOENT)
        if self.listdir(path):
            raise OSError(_ENOTEMPTY)
        self._op()
        self.dirs.remove(path)

    def listdir(self, path):
        if path not in self.dirs:
            raise OSError(_ENOENT if path not in self.files else _ENOTDIR)
        prefix = path.rstrip("/") + "/"
        return sorted(p[len(prefix):] for p in list(self.files) + list(self.dirs)
                      if p.startswith(prefix) and "/" not in p[len(prefix):] and p != prefix)

    def stat(self, path):
        if path in self.dirs:
            return (0x4000, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        if path in self.files:
            return (0x8000, 0, 0, 0, 0, 0, len(self.files[path]), 0, 0, 0)
        raise OSError(_ENOENT)

    def statvfs(self, path):
        # (f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, ...) as os.statvfs gives them.
        total = self.capacity if self.capacity is not None else 1 << 30
        free = max(0, total - self.used()) // 4096
        return (4096, 4096, total // 4096, free, free, 0, 0, 0, 0, 255)

    def tree(self, path):
        """{relative path: bytes} of every file under `path` (what a folder holds)."""
        prefix = path.rstrip("/") + "/"
        return {p[len(prefix):]: d for p, d in self.files.items() if p.startswith(prefix)}


# -- The ESP32's flash for the image form

SECTOR = 4096
# esp_ota_img_states_t (esp_flash_partitions.h)
NEW, PENDING_VERIFY, VALID, INVALID, ABORTED = 0, 1, 2, 3, 4
_SEQ_UNSET = 0xFFFFFFFF
ESP_FAIL = -1
ESP_ERR_OTA_VALIDATE_FAILED = 0x1503
ESP_ERR_INVALID_SIZE = 0x104
IMAGE_MAGIC = 0xE9  # esp_image_header_t.magic


def make_image(payload):
    """A firmware image as the model checks one: ESP-IDF's image format reduced to what
    esp_image_verify() checks first, the magic byte, a length and the appended SHA-256
    (magic, u32 length, payload, SHA-256 of what precedes it)."""
    body = bytes((IMAGE_MAGIC,)) + len(payload).to_bytes(4, "little") + payload
    return body + hashlib.sha256(body).digest()


def image_payload(data):
    """The payload of an image that checks, else None (a torn or foreign one)."""
    if len(data) < 37 or data[0] != IMAGE_MAGIC:
        return None
    n = int.from_bytes(data[1:5], "little")
    if 5 + n + 32 > len(data):
        return None
    body = data[:5 + n]
    return bytes(data[5:5 + n]) if hashlib.sha256(body).digest() == data[5 + n:37 + n] else None


class MemoryMedium:
    """Flash bytes in memory; writes and erases spend the power budget of `power`."""

    def __init__(self, size, power=None):
        self.mem = bytearray(b"\xff" * size)
        self.power = power
        self.worn = None  # an address that keeps a bit set a write should clear

    def read(self, addr, n):
        return bytes(self.mem[addr:addr + n])

    def program(self, addr, data):
        # NOR flash: a write only clears bits (new = old AND data); erase sets them again.
        n = self.power.allow(len(data)) if self.power is not None else len(data)
        for i in range(n):
            self.mem[addr + i] &= data[i]
        if self.worn is not None and addr <= self.worn < addr + n:
            self.mem[self.worn] |= 1
        if n < len(data):
            raise PowerCut()

    def erase(self, addr, n):
        for a in range(addr, addr + n, SECTOR):
            if self.power is not None and self.power.allow(1) < 1:
                raise PowerCut()  # one unit per sector: erased whole, or not at all
            self.mem[a:a + SECTOR] = b"\xff" * SECTOR


class FileMedium:
    """Flash bytes in a file that outlives the process (a process restart is a reboot); the
    file is made, erased, on first use."""

    def __init__(self, path, size):
        self.path = path
        self.size = size
        self.f = None

    def _file(self):
        if self.f is None:
            try:
                self.f = open(self.path, "r+b")
            except OSError:
                with open(self.path, "wb") as f:
                    for _ in range(self.size // SECTOR):
                        f.write(b"\xff" * SECTOR)
                self.f = open(self.path, "r+b")
        return self.f

    def read(self, addr, n):
        f = self._file()
        f.seek(addr)
        return f.read(n)

    def program(self, addr, data):
        old = self.read(addr, len(data))
        f = self._file()
        f.seek(addr)
        f.write(bytes(a & b for a, b in zip(old, data)))
        f.flush()

    def erase(self, addr, n):
        f = self._file()
        f.seek(addr)
        f.write(b"\xff" * n)
        f.flush()


class EspFlash:
    """otadata (two sectors) then ota_0 and ota_1 of `app_size` bytes each."""

    LABELS = ("ota_0", "ota_1")

    def __init__(self, medium, app_size):
        self.medium = medium
        self.app_size = app_size
        self.parts = {"ota_0": (2 * SECTOR, app_size), "ota_1": (2 * SECTOR + app_size, app_size)}
        self.running = None  # the label the bootloader started, once boot() has run
        self.erases = 0  # sectors erased (an update's wear)

    @staticmethod
    def size_for(app_size):
        return 2 * SECTOR + 2 * app_size

    def read(self, addr, n):
        return self.medium.read(addr, n)

    def program(self, addr, data):
        self.medium.program(addr, data)

    def erase(self, addr, n):
        if addr % SECTOR or n % SECTOR:
            raise OSError(ESP_ERR_INVALID_SIZE)
        self.erases += n // SECTOR
        self.medium.erase(addr, n)

    # -- otadata: esp_ota_select_entry_t {u32 ota_seq; u8 seq_label[20]; u32 ota_state; u32 crc}

    def entry(self, i):
        """(seq, state, crc ok) of otadata sector i."""
        raw = self.read(i * SECTOR, 32)
        seq = int.from_bytes(raw[0:4], "little")
        state = int.from_bytes(raw[24:28], "little")
        crc = int.from_bytes(raw[28:32], "little")
        return seq, state, crc == _crc(seq)

    def _write_entry(self, i, seq, state):
        # rewrite_ota_seq(): erase the sector, then write the entry.
        self.erase(i * SECTOR, SECTOR)
        self.program(i * SECTOR, seq.to_bytes(4, "little") + b"\xff" * 20
                     + state.to_bytes(4, "little") + _crc(seq).to_bytes(4, "little"))

    def active(self):
        """bootloader_common_get_active_otadata(): the valid entry with the highest seq."""
        best = -1
        for i in (0, 1):
            seq, state, ok = self.entry(i)
            if ok and seq != _SEQ_UNSET and state not in (INVALID, ABORTED):
                if best < 0 or seq > self.entry(best)[0]:
                    best = i
        return best

    def image(self, label):
        addr, size = self.parts[label]
        return image_payload(self.read(addr, size))

    def boot(self):
        """The bootloader at power-on: the label it starts, or None (nothing bootable)."""
        for i in (0, 1):  # a trial that reached another boot is aborted: any reset does it
            seq, state, ok = self.entry(i)
            if state == PENDING_VERIFY:
                self._write_entry(i, seq, ABORTED)
        active = self.active()
        order = list(self.LABELS)
        if active >= 0:
            seq, state, _ = self.entry(active)
            slot = (seq - 1) % 2
            if state == NEW:
                self._write_entry(active, seq, PENDING_VERIFY)
            order = [self.LABELS[slot], self.LABELS[1 - slot]]
        # load_boot_image(): the selected app if its image checks, else another one.
        for label in order:
            if self.image(label) is not None:
                self.running = label
                return label
        self.running = None
        return None

    def running_label(self):
        if self.running is None:
            self.boot()
        return self.running

    def set_boot(self, label):
        """esp_ota_set_boot_partition(): the image must check; then esp_rewrite_ota_data()."""
        if self.image(label) is None:
            raise OSError(ESP_ERR_OTA_VALIDATE_FAILED)
        index = self.LABELS.index(label)
        active = self.active()
        if active >= 0:
            seq = self.entry(active)[0]
            i = 0
            while seq > (index + 1) % 2 + i * 2:
                i += 1
            self._write_entry(1 - active, (index + 1) % 2 + i * 2, NEW)
        else:
            self._write_entry(0, index + 1, NEW)

    def mark_valid(self):
        """esp_ota_mark_app_valid_cancel_rollback(): ESP_FAIL without an active entry (a
        board flashed by esptool: "Running firmware is factory")."""
        active = self.active()
        if active < 0:
            raise OSError(ESP_FAIL)
        seq, state, _ = self.entry(active)
        if state != VALID:
            self._write_entry(active, seq, VALID)


def _crc(seq):
    # bootloader_common_ota_select_crc(): crc32_le(UINT32_MAX, &ota_seq, 4)
    return binascii.crc32(seq.to_bytes(4, "little"), 0xFFFFFFFF) & 0xFFFFFFFF


def partition_class(flash, block_size=SECTOR):
    """An esp32.Partition (MicroPython v1.28.0, ports/esp32/esp32_partition.c) over `flash`:
    what the image form uses of it."""

    class Partition:
        RUNNING = 1

        def __init__(self, id, block_size=block_size):
            label = flash.running_label() if id == Partition.RUNNING else id
            if label not in flash.parts:
                raise ValueError("partition not found")
            self.label = label
            self.block_size = block_size

        def info(self):
            addr, size = flash.parts[self.label]
            return (0, 0x10 + flash.LABELS.index(self.label), addr, size, self.label, False)

        def _addr(self, block, n, offset=0):
            addr, size = flash.parts[self.label]
            start = block * self.block_size + offset
            if start < 0 or start + n > size:
                raise OSError(ESP_ERR_INVALID_SIZE)
            return addr + start

        def readblocks(self, block, buf, offset=0):
            buf[:] = flash.read(self._addr(block, len(buf), offset), len(buf))

        def writeblocks(self, block, buf, offset=None):
            if offset is None:  # a simple write: erase first
                addr = self._addr(block, len(buf))
                flash.erase(addr, len(buf))
            else:  # an extended write: erased before by the caller
                addr = self._addr(block, len(buf), offset)
            flash.program(addr, bytes(buf))

        def ioctl(self, cmd, arg):
            if cmd == 4:
                return flash.parts[self.label][1] // self.block_size
            if cmd == 5:
                return self.block_size
            if cmd == 6:
                flash.erase(self._addr(arg, self.block_size), self.block_size)
            return 0 if cmd in (1, 2, 3, 6) else None

        def set_boot(self):
            flash.set_boot(self.label)

        def get_next_update(self):
            return Partition(flash.LABELS[1 - flash.LABELS.index(self.label)])

        @classmethod
        def mark_app_valid_cancel_rollback(cls):
            flash.mark_valid()

    return Partition
