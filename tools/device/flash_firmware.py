"""Write a MicroPython firmware image to an ESP32 with esptool (make flash).

  python -m tools.device.flash_firmware --port /dev/ttyUSB0 --image ESP32_GENERIC-v1.28.0.bin

Nothing is downloaded: bring the image, the official MicroPython v1.28.0 ESP32_GENERIC
(micropython.org/download/ESP32_GENERIC; the file carries a date, ESP32_GENERIC-<date>-
v1.28.0.bin), which freezes umqtt.simple 1.7.0 and requests 0.10.2, the versions the agent
is tested with; or your own image with the agent frozen in (docs/esp32.md). The image is
checked on this computer first (esptool's image magic 0xE9, the chip it is built for, a full
firmware and not just the application); only then does esptool erase the whole flash (so
the NVS, and the persisted cap with it, starts empty) and write the image, in one run.
"""
import argparse
import os
import re
import struct
import subprocess
import sys

from esptool.bin_image import LoadFirmwareImage
from esptool.targets import CHIP_DEFS
from esptool.util import FatalError

from tools.device.ports import port_problem

ESP_IMAGE_MAGIC = 0xE9
CHIPS = sorted(name for name, rom in CHIP_DEFS.items() if getattr(rom, "IMAGE_CHIP_ID", None)
               is not None)


class FlashError(Exception):
    pass


def check_image(path, chip):
    """Refuse an image that cannot be the full firmware for `chip`; say what it is instead."""
    image = load_image(path, chip)
    if is_application(image):
        raise FlashError("%s is an application image (as micropython.bin, for 0x10000), not "
                         "the full firmware: use the ESP32_GENERIC-*.bin download"
                         % os.path.basename(path))
    return image


def is_application(image):
    # The full firmware starts with the second-stage bootloader, which runs from RAM; an
    # application image (micropython.bin, for 0x10000; what an OTA update writes) has
    # segments mapped from flash.
    return any(image.is_flash_addr(s.addr) for s in image.segments)


def load_image(path, chip):
    """esptool's reading of the ESP image at `path`, built for `chip`, else FlashError."""
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FlashError("cannot read image %s: %s" % (path, e.strerror))
    if not data or data[0] != ESP_IMAGE_MAGIC:
        raise FlashError("%s is not an ESP32 firmware image (it starts with %s, not the "
                         "magic byte 0xE9): use a .bin from micropython.org/download/"
                         "ESP32_GENERIC" % (name, "0x%02X" % data[0] if data else "nothing"))
    try:
        image = LoadFirmwareImage(chip, data)
    except (FatalError, struct.error, RuntimeError, ValueError) as e:
        raise FlashError("%s is damaged or truncated (esptool: %s)" % (name, e))
    wanted = CHIP_DEFS[chip].IMAGE_CHIP_ID
    if image.chip_id != wanted:
        built_for = [n for n, rom in CHIP_DEFS.items()
                     if getattr(rom, "IMAGE_CHIP_ID", None) == image.chip_id]
        raise FlashError("%s is built for %s, not %s: pick the image for this board's chip"
                         % (name, built_for[0] if built_for else "chip id %d" % image.chip_id,
                            chip))
    return image


def esptool(args):
    """Run esptool: its progress goes to the terminal as it comes, its errors are kept."""
    proc = subprocess.Popen([sys.executable, "-m", "esptool", *args], stderr=subprocess.PIPE,
                            text=True, errors="replace")
    _, err = proc.communicate()
    return proc.returncode, err


def esptool_error(stderr):
    """esptool's own words for what went wrong: its fatal error line and hint, colour removed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", stderr)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "fatal error occurred" in line.lower() or line.startswith("ERROR"):
            message = re.sub(r"^(ERROR:?\s*)?(A fatal error occurred:\s*)?", "", line)
            hint = next((h for h in lines[i + 1:] if h.startswith("Hint:")), None)
            return message + (" (%s)" % hint if hint else "")
    return lines[-1] if lines else "no message"


def main(argv=None):
    p = argparse.ArgumentParser(prog="make flash PORT=... IMAGE=...",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--port", help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--image", help="the MicroPython .bin to write")
    p.add_argument("--chip", default="esp32", choices=CHIPS)
    p.add_argument("--offset", help="where the image goes (default: the chip's bootloader "
                   "offset, 0x1000 on the ESP32, 0 on the S3 and C3)")
    a = p.parse_args(argv)
    try:
        if not a.port or not a.image:
            raise FlashError("give both PORT and IMAGE: make flash PORT=/dev/ttyUSB0 "
                             "IMAGE=firmware.bin")
        if not os.path.isfile(a.image):
            raise FlashError("image %s not found" % a.image)
        check_image(a.image, a.chip)
        problem = port_problem(a.port)
        if problem:
            raise FlashError(problem)
        offset = a.offset or "0x%x" % CHIP_DEFS[a.chip].BOOTLOADER_FLASH_OFFSET
        print("flash: %s -> %s on %s at %s; the whole flash is erased first (NVS too)"
              % (os.path.basename(a.image), a.chip, a.port, offset), flush=True)
        # One esptool run: it checks the image against the chip it finds before erasing.
        code, err = esptool(["--chip", a.chip, "--port", a.port, "write-flash", "--erase-all",
                             "-z", offset, a.image])
        if code:
            raise FlashError("esptool write-flash on %s failed: %s" % (a.port,
                                                                       esptool_error(err)))
        if err.strip():
            print(err.strip(), file=sys.stderr)  # warnings worth seeing
    except FlashError as e:
        print("flash: error: %s" % e, file=sys.stderr)
        return 2
    print("flash: %s written to %s" % (os.path.basename(a.image), a.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
