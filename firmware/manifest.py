# The agent as a MicroPython manifest: one folder per layer (docs/design.md, "The tree"),
# each with a manifest naming its modules, and the micropython-lib packages the agent uses.
# Frozen flat, as micropython-lib's drivers are: a module keeps its global name (`import
# control`), no package costs heap. Included by boards/esp32/manifest.py (an ESP32 image)
# and boards/sim/manifest.py (make unix32), and read by tools/device/manifest.py for the
# .mpy trees (make sim, make test, make deploy), so all of them carry the same files.
# $(MPY_LIB_DIR) must be the micropython-lib that MicroPython v1.28.0 pins
# (../shared/third_party/micropython-lib): umqtt.simple 1.7.0, requests 0.10.2.
metadata(description="EV-charger agent (board-independent)", version="0.1.0")

include("core")  # the control tick: pilot, contactor, the ceiling
include("charger")  # requests, settings, storage: the charger without a network
include("uplink")  # what every uplink shares: the runner, the door, TLS, webhooks
include("mqtt")  # the MQTT uplink and Home Assistant discovery
include("ocpp16")  # the OCPP 1.6J uplink
include("http")  # the HTTP front: the API page's own paths, and a page
include("balancing")  # site balancing (optional)
include("meters")  # Modbus meters on the charger's wires (optional)
include("ota")  # signed updates over the air

require("umqtt.simple")  # mqtt_client.py (brings ssl)
require("requests")  # webhook.py, http:// URLs
