# Boot of the ESP32 charger; main.py on the board imports it (after the boot layer of
# updates, as make deploy writes it: tools/device/deploy.py, MAIN).
# Order matters: config, then the board (safe outputs), then the agent (persisted cap read),
# and only then the control thread may offer current. Anything raised at boot resets the
# board: dropping to the REPL would stop an update's rollback (docs/ota.md).
import sys
import machine
import config
from esp32_board import Board, fail_safe
from esp32_pins import check_pins

CONFIG = "config.json"


def main():
    try:
        cfg = config.load(CONFIG, check_pins)
    except config.ConfigError as e:
        print("CONFIG ERROR:", e)
        print("charger held safe:", fail_safe(config.read(CONFIG)))
        return
    from agent import Agent
    import runner
    board = Board(cfg)
    agent = Agent(board)
    print("evse: %s up, reset cause %s" % (cfg["device_id"], board.reset_cause))
    runner.serve(agent, board)


try:
    main()
except Exception as e:
    sys.print_exception(e)
    machine.reset()
