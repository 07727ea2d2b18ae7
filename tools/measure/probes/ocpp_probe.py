# What the OCPP uplink costs in the heap, under micropython: the agent alone, then with the
# OCPP modules imported and the uplink built, then live and at its peak during a session
# against a central system (make bench's CSMS drives the other end: profiles, configuration,
# a composite schedule, meter values every second). The control loop and the worker run in
# this thread in real time on a minimal vehicle model; the uplink in its own. One JSON line.
#   micropython -X heapsize=64K ocpp_probe.py WS_URL STATE_DIR SECONDS
import gc
import json
import sys
import time
import _thread

url, state_dir, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
gc.collect()
base = gc.mem_alloc()
import sim_board as sim
from agent import Agent

cfg = {"device_id": "ocpp-probe", "supply_voltage": 230, "phases": 1, "max_current": 32,
       "uplink": "ocpp", "ocpp": {"url": url, "id_tag": "PROBE"}}
board = sim.Board(cfg, sim.FileStore(state_dir))
board.unix_base_ms = 1795478400000
agent = Agent(board)
gc.collect()
agent_heap = gc.mem_alloc() - base
import ocpp_uplink
gc.collect()
imported = gc.mem_alloc() - base - agent_heap
uplink = ocpp_uplink.OcppUplink(cfg, board, agent)
gc.collect()
built = gc.mem_alloc() - base - agent_heap
_thread.start_new_thread(uplink.run, ())

peak_alloc = peak_live = 0
start = time.ticks_ms()
end_ms = int(seconds * 1000)
i = 0
while True:
    now = time.ticks_diff(time.ticks_ms(), start)
    if now >= end_ms:
        break
    plugged = 1000 <= now < end_ms - 4000
    pwm = 0 < board.pilot_counts < 10000
    board.now = now
    board.high_mv = (6000 if pwm else 9000) if plugged else 12000
    board.low_mv = -12000 if pwm else board.high_mv
    board.feedback = board.contactor_drive
    draw = board.pilot_counts * 6 // 1000 if (pwm and board.contactor_drive) else 0
    board.current_da = draw
    board.power_w = draw * 23
    board.energy_wh = now // 1000 * 2
    agent.tick(now)
    i += 1
    if i % 10 == 0:
        agent.service(now)
        a = gc.mem_alloc()
        if a > peak_alloc:
            peak_alloc = a
    if i % 100 == 0:
        gc.collect()
        a = gc.mem_alloc()
        if a > peak_live:
            peak_live = a
    time.sleep_ms(10)
print(json.dumps({"agent": agent_heap, "ocpp_imported": imported, "ocpp_built": built,
                  "peak_alloc": peak_alloc - base, "peak_live": peak_live - base,
                  "heap": gc.mem_alloc() + gc.mem_free(), "connects": uplink.connects,
                  "accepted": uplink.accepted, "refused": uplink.refused}))
