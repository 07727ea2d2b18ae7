# What a whole update costs the charger's heap under micropython (docs/ota.md, "Cost"): the
# agent wired as a board's (runner.Lockstep: its Updater, as every boot has), an update
# request as an uplink hands it in (update_job imported, the manifest verified), then the
# download from the bench's server in the update's own thread, straight to flash, verified
# and switched, while this thread goes on ticking the control loop. Prints one JSON line: the
# live heap (after a collection) when wired, after the request, and after the switch; and
# whether the update reached its restart. STATE_DIR is the board's flash (a bundle board).
#   micropython -X heapsize=56K update_probe.py STATE_DIR URL RELEASE_JSON
import gc

gc.collect()
script = gc.mem_alloc()  # the interpreter and this script: not the charger's
import json
import sys
import time
import sim_board as sim
import runner
from agent import Agent


def live():
    gc.collect()
    return gc.mem_alloc() - script


state_dir, url, release = sys.argv[1], sys.argv[2], sys.argv[3]
with open(release) as f:
    body = json.load(f)
cfg = {"device_id": "update-probe", "supply_voltage": 230, "phases": 1, "max_current": 32,
       "state_dir": state_dir, "ota": {"keys": body.pop("keys")}}
board = sim.Board(cfg, sim.FileStore(state_dir))
board.unix_base_ms = 1795478400000
board.publish = lambda topic, payload, retain=False: None
agent = Agent(board)
loop = runner.Lockstep(agent, board)
out = {"wired": live()}
agent.handle("update", json.dumps(dict(body, requestId="probe", url=url)).encode(), 0)
out["accepted"] = agent.updater.job is not None
out["requested"] = live()
now = 0
deadline = time.ticks_add(time.ticks_ms(), 60000)
while not board.restarting and time.ticks_diff(deadline, time.ticks_ms()) > 0:
    now += board.TICK_MS
    board.now = now
    loop.step(now)
    time.sleep_ms(1)
out["restarted"] = board.restarting
out["switched"] = live()
print(json.dumps(out))
