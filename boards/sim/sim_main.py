# Entry point of the simulated charger under the micropython binary:
#   micropython sim_main.py CONFIG.json
# The config names the bench's link port, the state directory (the simulated flash) and
# the installation; with "broker", "ocpp" or "uplinks" set the agent runs its threads and
# uplinks (runner.serve; "uplinks": [] is a charger with no network), otherwise requests and
# publishes travel over the bench link in lockstep.
import sys
import json
import _thread
import sim_board as sim
from sim_link import Link
from agent import Agent
import runner
import topics


def main(path):
    with open(path) as f:
        cfg = json.load(f)
    link = Link(cfg["bench_port"], topics.base(cfg.get("topic_prefix"), cfg["device_id"]))
    board = sim.Board(cfg, sim.FileStore(cfg["state_dir"]), link)
    agent = Agent(board)
    if cfg.get("broker") or cfg.get("ocpp") or "uplinks" in cfg:
        # The loops run in threads of their own; this one waits for the board to halt (its
        # bench link closed, the control loop died, or a restart was asked for) and then
        # returns, which ends the process with every thread in it: no orphaned agent goes
        # on answering MQTT or OCPP.
        _thread.start_new_thread(runner.serve, (agent, board))
        board.halted.acquire()
        if board.restarting:
            sys.exit(sim.RESTART_EXIT)  # the bench powers a new one on
    else:
        loop = runner.Lockstep(agent, board)
        link.on_message = loop.on_message
        loop.run()


main(sys.argv[1])
