# Entry point of the simulated charger under the micropython binary:
#   micropython -m sim_main CONFIG.json
# The config names the bench's link port, the state directory (the simulated flash) and
# the installation; with "broker", "ocpp" or "uplinks" set the agent runs its threads and
# uplinks (runner.serve; "uplinks": [] is a charger with no network), otherwise requests and
# publishes travel over the bench link in lockstep. A bundle board, as one `make deploy` sets
# up (docs/ota.md): the boot layer (ota_boot) puts the app folder of an update first on the
# path before anything of the agent is imported, and anything raised at boot restarts the
# board, as machine.reset() does on an ESP32 (dropping out would stop an update's boot count
# and its rollback).
import sys
import json
import ota_boot

RESTART_EXIT = 75  # the process's exit status when the board restarts: the bench powers a
# new one on (an OCPP Reset, an update, a crash at boot)


def main(path):
    with open(path) as f:
        cfg = json.load(f)
    app = ota_boot.app_path(cfg["state_dir"])
    if app:
        sys.path.insert(0, app)
    import _thread
    import sim_board as sim
    from sim_link import Link
    from agent import Agent
    import runner
    import topics
    link = Link(cfg["bench_port"], topics.base(cfg.get("topic_prefix"), cfg["device_id"]))
    board = sim.Board(cfg, sim.FileStore(cfg["state_dir"]), link)
    agent = Agent(board)
    if cfg.get("broker") or cfg.get("ocpp") or "uplinks" in cfg:
        # The loops run in threads of their own; this one waits for the board to halt (its
        # bench link closed, the control loop died, or a restart was asked for) and then
        # returns, which ends the process with every thread in it: no orphaned agent goes
        # on answering MQTT or OCPP.
        _thread.start_new_thread(_serve, (runner, agent, board))
        board.halted.acquire()
    else:
        loop = runner.Lockstep(agent, board)
        link.on_message = loop.on_message
        loop.run()  # returns when the board restarts; raises when the bench goes
    if board.restarting:
        sys.exit(RESTART_EXIT)


def _serve(runner, agent, board):
    # As esp32_main's: what runner.serve raises (an uplink that cannot be built, a bug at
    # boot) restarts the board.
    try:
        runner.serve(agent, board)
    except Exception as e:
        sys.print_exception(e)
        board.restart()


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as e:  # at boot, or the lockstep loop: the board resets
        sys.print_exception(e)
        sys.exit(RESTART_EXIT)
