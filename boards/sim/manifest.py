# make unix32: the agent and the simulated board frozen into a 32-bit unix port, the way an
# ESP32 image freezes the agent and its board (boards/esp32/manifest.py).
include("../../firmware")

module("sim_board.py")
module("sim_link.py")
module("sim_main.py")
module("sim_serial.py")
