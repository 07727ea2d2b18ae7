# An ESP32 image with the agent frozen in (docs/esp32.md, "Your own image"):
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=<this file>
# with MicroPython v1.28.0, whose lib/micropython-lib is the commit the agent is tested with.
include("$(PORT_DIR)/boards/manifest.py")  # what the official image has (asyncio, networking)
include("../../firmware")

require("ntptime")  # esp32_board.py sets the clock
module("esp32_board.py")
module("esp32_main.py")
