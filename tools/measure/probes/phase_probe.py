# The switch between one phase and three under micropython (docs/meters.md, "One phase or
# three", "Measured"): the live heap an agent with a second contactor takes beyond one
# without, and the control tick through a whole switch (the pause, the vehicle letting go,
# the settle time, the move, the resume) against the same ticks charging steadily: bytes
# allocated, and each tick's time (median, mean, 99th percentile, slowest: on a shared host
# the tail is mostly its scheduling). Run by `make bench` (tools/measure/perf.py) on make
# unix32's frozen build.
#   micropython phase_probe.py
# Prints one JSON line.
from array import array
import gc
import json
import time
import sim_board as sim
from agent import Agent

FULL = sim.Board.PWM_FULL


class MemStore:
    def __init__(self):
        self.data = {}

    def read(self, key):
        return self.data.get(key)

    def write(self, key, data):
        self.data[key] = data


CFG = {"device_id": "probe", "supply_voltage": 230, "phases": 3, "max_current": 16}


def live(cfg):
    # The heap an agent and its board keep, built on this config.
    gc.collect()
    base = gc.mem_alloc()
    board = sim.Board(cfg, MemStore())
    agent = Agent(board)
    gc.collect()
    return gc.mem_alloc() - base, board, agent


plain, _, _ = live(CFG)
_ = None
gc.collect()
switching, board, agent = live(dict(CFG, phase_switch=True))
now = 0


def tick():
    # A vehicle that asks while the pilot offers current and lets go when it does not; the
    # contacts follow their coils; 16 A flow while the main contactor is closed.
    global now
    now += 10
    pwm = 0 < board.pilot_counts < FULL
    board.now = now
    board.high_mv = 6000 if pwm else 9000
    board.low_mv = -12000 if pwm else board.high_mv
    board.feedback = board.contactor_drive
    board.phase_feedback = board.phase_drive
    board.current_da = 160 if board.contactor_drive and pwm else 0
    t0 = time.ticks_us()
    agent.tick(now)
    return time.ticks_diff(time.ticks_us(), t0)


times = array("H", bytes(2 * 2000))  # each tick's us (to 65 ms), made before measuring


def measure(until):
    # Ticks until `until()` holds: {ticks, bytes allocated, median, mean, p99, slowest us}.
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    n = 0
    while not until() and n < len(times):
        times[n] = min(tick(), 65535)
        n += 1
    grown = gc.mem_alloc() - before
    gc.enable()
    ts = sorted(times[:n])
    return {"ticks": n, "bytes": grown, "p50_us": ts[n // 2], "mean_us": sum(ts) / n,
            "p99_us": ts[n * 99 // 100], "worst_us": ts[-1]}


for _ in range(7000):  # the first position after boot (three), the minimum interval
    tick()
steady = measure(lambda: now >= 85000)  # 15 s charging on three phases
agent.handle("settings", b'{"requestId":"p","settings":{"phases_mode":{"value":1,'
             b'"unit":"phases"}}}', now)
switches = agent.phases.switches
switch = measure(lambda: agent.phases.switches > switches and board.contactor_drive)
print(json.dumps({"plain": plain, "switching": switching, "switch": switch, "steady": steady,
                  "in_use": agent.phases.in_use}))
