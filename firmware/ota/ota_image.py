# The image form (docs/ota.md, "The image"): the new firmware image, written block by block
# to the other OTA app partition through the board's ota_partition (esp32.Partition), read
# back and hashed, then chosen with set_boot. The bootloader boots it once and rolls it back
# at the next reset unless it marks itself valid (ota_valid.Trial). Network thread.
from micropython import const
import ota_boot
from ota_install import Install, Receiver, check_digest, digest_of
from ota_manifest import NOT_BOOTABLE, Refused, STORAGE, TOO_LARGE

_IOCTL_BLOCK_COUNT = const(4)  # MicroPython's block-device ioctl numbers
_IOCTL_BLOCK_SIZE = const(5)
_LABEL = const(4)  # Partition.info(): (type, subtype, addr, size, label, encrypted)


def running_label(partition):
    return partition(partition.RUNNING).info()[_LABEL]


class ImageWriter:
    # Fills one flash block at a time (4 KB) and writes it, erased first, to the partition.
    def __init__(self, part, size):
        self.part = part
        self.buf = bytearray(part.ioctl(_IOCTL_BLOCK_SIZE, 0))
        room = len(self.buf) * part.ioctl(_IOCTL_BLOCK_COUNT, 0)
        if size > room:
            raise Refused(TOO_LARGE, "%d bytes, the partition holds %d" % (size, room))
        self.size = size
        self.fill = 0
        self.block = 0

    def write(self, chunk):
        buf = self.buf
        view = memoryview(chunk)
        i = 0
        while i < len(view):
            n = min(len(view) - i, len(buf) - self.fill)
            buf[self.fill:self.fill + n] = view[i:i + n]
            self.fill += n
            i += n
            if self.fill == len(buf):
                self._flush()

    def _flush(self):
        self.part.writeblocks(self.block, self.buf)  # without an offset: erases, then writes
        self.block += 1
        self.fill = 0

    def finish(self, sha256):
        if self.fill:
            for i in range(self.fill, len(self.buf)):
                self.buf[i] = 0xFF  # as erased flash reads
            self._flush()
        block = [0]

        def read_into(buf):
            self.part.readblocks(block[0], buf)
            block[0] += 1
            return len(buf)

        check_digest(digest_of(read_into, self.size, self.buf), sha256, "the partition")


class ImageInstall(Install):
    def __init__(self, partition, manifest, root, fs=ota_boot.FS):
        super().__init__(manifest, root, fs)
        try:
            self.part = partition(partition.RUNNING).get_next_update()
        except OSError:  # ENOENT: no OTA app partitions in this board's table
            raise Refused(STORAGE, "no other app partition: the board needs the OTA variant "
                          "of the image (docs/esp32.md)")
        self.receiver = Receiver(manifest, ImageWriter(self.part, manifest.size))

    def activate(self, running):
        # The record first: whenever the new image can run, it finds its trial.
        self._record(ota_boot.IMAGE, self.part.info()[_LABEL], None, running)
        try:
            self.part.set_boot()  # ESP-IDF verifies the image (esp_image_verify) first
        except OSError as e:
            try:
                ota_boot.restore(self.fs, self.root, self.rec)
            except OSError:
                pass  # the next boot reads the trial as never started
            raise Refused(NOT_BOOTABLE, "the bootloader refuses the image: %r" % e)

    def abort(self):
        pass  # the other partition is never booted without set_boot
