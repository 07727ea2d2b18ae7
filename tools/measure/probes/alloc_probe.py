# Run under micropython with the firmware on MICROPYPATH: drives the agent's control tick
# through steady states (no vehicle, charging, paused) and a switch from three phases to one
# (phases.py: the pause, the settle, the switch, the resume) and prints the bytes each
# allocates over many ticks, as JSON. Used by host_tests/test_alloc.py and `make bench`.
import gc
import json
import sys
import time
import sim_board as sim
from agent import Agent

TICKS = int(sys.argv[2]) if len(sys.argv) > 2 else 3000


class MemStore:
    def __init__(self):
        self.data = {}

    def read(self, key):
        return self.data.get(key)

    def write(self, key, data):
        self.data[key] = data


cfg = {"device_id": "probe", "supply_voltage": 230, "phases": 1, "max_current": 32}
board = sim.Board(cfg, MemStore())
agent = Agent(board)
now = 0


def run(n, high, low, current, leak=False):
    global now
    for _ in range(n):
        if leak:
            now = int(now * 1.0)  # calibration: a float per tick must show up
        now += 10
        board.now = now
        board.high_mv = high
        board.low_mv = low if 0 < board.pilot_counts < 10000 else high
        board.feedback = board.contactor_drive
        board.phase_feedback = board.phase_drive
        board.current_da = current if board.contactor_drive else 0
        agent.tick(now)


def measure(name, high, low, current, leak=False, ticks=TICKS):
    run(200, high, low, current)  # settle into the state
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    t0 = time.ticks_us()
    run(ticks, high, low, current, leak)
    us = time.ticks_diff(time.ticks_us(), t0)
    grown = gc.mem_alloc() - before
    gc.enable()
    return {"state": name, "status": agent.control.status, "ticks": ticks, "bytes": grown,
            "us_per_tick": us / ticks, "contactor": board.contactor_drive,
            "phase_switches": agent.phases.switches}


results = [measure("no_vehicle", 12000, 12000, 0),
           measure("connected", 9000, -12000, 0),
           measure("charging", 6000, -12000, 320)]
# below 6 A: the session is held, pilot x1
agent.settings.write({"max_charge_rate": {"value": 1.0}}, 0)
results.append(measure("suspended", 9000, 9000, 0))
# A three-phase installation with a second contactor: three phases from boot, then a limit
# of 3 kW (below 3 x 6 A) makes it switch to one phase while charging. The request and the
# events it causes are the network side's; only the ticks are measured.
board = sim.Board(dict(cfg, phases=3, phase_switch=True), MemStore())
agent = Agent(board)
run(7000, 6000, -12000, 100)  # the first position after boot, and the minimum interval
agent.handle("limit", b'{"requestId":"p","limit":{"value":3,"unit":"kw"},"ttl":3600}', now)
results.append(measure("phase_switch", 6000, -12000, 100))  # 10 A: within 13 A
results.append(measure("calibration", 9000, 9000, 0, leak=True, ticks=500))
print(json.dumps(results))
