# An ESP32 image with the agent frozen in (docs/esp32.md, "Your own image"):
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=<this file>
# with MicroPython v1.28.0, whose lib/micropython-lib is the commit the agent is tested with.
# The one list of what the ESP32 board runs: make deploy puts the same modules in lib/, and
# make unix32's "esp32" build freezes them to boot esp32_main with the ESP32 stand-ins
# (host_tests/test_esp32_board.py); both read it with port=False, without the port's own.
options.defaults(port=True)
if options.port:
    include("$(PORT_DIR)/boards/manifest.py")  # what the official image has (asyncio, networking)
include("../../firmware")

require("ntptime")  # esp32_board.py sets the clock
module("esp32_board.py")
module("esp32_main.py")
module("esp32_pins.py")  # the config's pin checks (esp32_main; make deploy runs them too)
