"""Write a MicroPython firmware image to an ESP32 with esptool (make flash).

  python -m tools.device.flash_firmware --port /dev/ttyUSB0 --image ESP32_GENERIC-v1.27.0.bin

Nothing is downloaded: bring the image (micropython.org/download/ESP32_GENERIC, a build
with umqtt.simple and requests frozen in, as the official ones are). Erases the flash
first, so the NVS (the persisted cap) starts empty.
"""
import argparse
import os
import subprocess
import sys


def main(argv=None):
    p = argparse.ArgumentParser(prog="make flash PORT=... IMAGE=...",
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--port", help="serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--image", help="the MicroPython .bin to write")
    p.add_argument("--chip", default="esp32")
    p.add_argument("--offset", default="0x1000", help="0x1000 for the ESP32, 0 for S3/C3")
    a = p.parse_args(argv)
    if not a.port or not a.image:
        print("flash: error: give both PORT and IMAGE: make flash PORT=/dev/ttyUSB0 "
              "IMAGE=firmware.bin", file=sys.stderr)
        return 2
    if not os.path.isfile(a.image):
        print("flash: error: image %s not found" % a.image, file=sys.stderr)
        return 2
    base = [sys.executable, "-m", "esptool", "--chip", a.chip, "--port", a.port]
    for step in (["erase_flash"], ["write_flash", "-z", a.offset, a.image]):
        res = subprocess.run(base + step, capture_output=True, text=True)
        if res.returncode:
            lines = (res.stderr + res.stdout).strip().splitlines()
            print("flash: error: esptool %s on %s failed: %s" % (
                step[0], a.port, lines[-1] if lines else res.returncode), file=sys.stderr)
            return 2
    print("flash: %s written to %s" % (os.path.basename(a.image), a.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
