"""The files a MicroPython manifest names, read by MicroPython's own manifest code.

firmware/manifest.py is what an ESP32 image (boards/esp32/manifest.py) and make unix32
(boards/sim/manifest.py) freeze; the .mpy trees (make sim, make test, make deploy) are
built from the same manifest here, with tools/manifestfile.py of the pinned v1.28.0 source
in compile mode, and require() resolved in the pinned micropython-lib.
"""
import os
import sys

from tools.paths import MICROPYTHON_SRC, MPY_LIB, third_party


def files(manifest):
    """[(source .py, target path on the board, mpy-cross -O level or None)] of `manifest`."""
    third_party()
    tools = os.path.join(MICROPYTHON_SRC, "tools")
    if tools not in sys.path:
        sys.path.append(tools)
    import manifestfile
    m = manifestfile.ManifestFile(manifestfile.MODE_COMPILE, {
        "MPY_DIR": MICROPYTHON_SRC, "MPY_LIB_DIR": MPY_LIB, "PORT_DIR": None,
        "BOARD_DIR": None})
    m.execute(manifest)
    return [(f.full_path, f.target_path, f.opt) for f in m.files()]
