# Entry point of the simulated charger under the micropython binary:
#   micropython sim_main.py CONFIG.json
# The config names the bench's link port, the state directory (the simulated flash) and
# the installation; with "broker" set the agent talks MQTT, otherwise requests and
# publishes travel over the bench link.
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
    if cfg.get("broker"):
        # The loops run in threads of their own; this one waits for the board to halt (its
        # bench link closed, or the control loop died) and then returns, which ends the
        # process with every thread in it: no orphaned agent goes on answering MQTT.
        _thread.start_new_thread(runner.serve, (agent, board))
        board.halted.acquire()
    else:
        loop = runner.Lockstep(agent, board)
        link.on_message = loop.on_message
        loop.run()


main(sys.argv[1])
