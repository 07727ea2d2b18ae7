# The agent as a MicroPython manifest: every module of firmware/ and the micropython-lib
# packages it uses. Included by boards/esp32/manifest.py (an ESP32 image) and
# boards/sim/manifest.py (make unix32), and read by tools/device/manifest.py for the .mpy
# trees (make sim, make test, make deploy), so all of them carry the same files.
# $(MPY_LIB_DIR) must be the micropython-lib that MicroPython v1.28.0 pins
# (../shared/third_party/micropython-lib): umqtt.simple 1.7.0, requests 0.10.2.
import os

metadata(description="EV-charger agent (board-independent)", version="0.1.0")

for name in sorted(os.listdir(".")):  # a manifest runs in its own folder
    if name.endswith(".py") and name != "manifest.py":
        module(name)
# The folders, each with a manifest naming its modules.
include("core")
include("charger")
include("uplink")
include("mqtt")
include("ocpp16")
include("balancing")

require("umqtt.simple")  # uplink.py, mqtt_client.py (brings ssl)
require("requests")  # webhook.py, http:// URLs
