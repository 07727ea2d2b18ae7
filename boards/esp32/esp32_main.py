# Boot of the ESP32 charger; main.py on the board is just "import esp32_main".
# Order matters: config, then the board (safe outputs), then the agent (persisted cap read),
# and only then the control thread may offer current.
import config
from esp32_board import Board, check_pins, fail_safe

CONFIG = "config.json"


def main():
    try:
        cfg = config.load(CONFIG, check_pins)
    except config.ConfigError as e:
        print("CONFIG ERROR:", e)
        print("charger held safe:", fail_safe(config.read(CONFIG)))
        return
    from agent import Agent
    from uplink import Uplink
    import runner
    board = Board(cfg)
    agent = Agent(board)
    hooks = None
    if cfg.get("webhook_url"):
        from webhook import Webhooks
        hooks = Webhooks(cfg["webhook_url"], cfg["webhook_secret"], board.unix_ms)
        agent.on_event = hooks.offer
    print("evse: %s up, reset cause %s" % (cfg["device_id"], board.reset_cause))
    runner.threaded(agent, board, Uplink(cfg, board), hooks)


main()
