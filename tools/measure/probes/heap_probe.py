# A long session under micropython with the MQTT uplink connected, in virtual time: the
# control loop runs flat out on a minimal vehicle model, a second client writes the cap
# every 10 s of virtual time, and the heap is sampled. Prints one JSON line. The agent is
# wired as runner.serve wires a board's (the uplink with Home Assistant discovery, the
# worker thread); only the control loop is this script's, to run in virtual time.
#   micropython -X heapsize=64K heap_probe.py HOST:PORT[,HOST:PORT...] HOURS STATE_DIR
# (several: the agent's broker list, as a config gives it; the session is on the first)
import gc

# Before anything else: the interpreter and this script's own bytecode, which a board does
# not hold (its main is frozen with the agent); memory.session takes the script's part out.
gc.collect()
script = gc.mem_alloc()
import json
import sys
import time
import _thread
import sim_board as sim
import runner
import topics
from agent import Agent
from mqtt_uplink import MqttUplink
from umqtt.simple import MQTTClient


def live():
    gc.collect()
    return gc.mem_alloc()


stages = {"imported": live()}  # where the live heap goes: the code, the objects, a session
broker, hours, state_dir = sys.argv[1], float(sys.argv[2]), sys.argv[3]
cfg = {"device_id": "heap-probe", "supply_voltage": 230, "phases": 1, "max_current": 32,
       "broker": broker.split(",") if "," in broker else broker, "keepalive": 30}
board = sim.Board(cfg, sim.FileStore(state_dir))
board.unix_base_ms = 1795478400000
agent = Agent(board)
uplink = MqttUplink(cfg, board, agent)  # with Home Assistant discovery, as configured
stages["wired"] = live()
_thread.start_new_thread(runner.worker_loop, (agent, board))
_thread.start_new_thread(uplink.run, ())
t0 = time.ticks_ms()
while uplink.connects < 1:
    time.sleep(0.05)
    if time.ticks_diff(time.ticks_ms(), t0) > 20000:
        raise SystemExit("uplink did not connect")
host, port = broker.split(",")[0].split(":")
stages["connected"] = live()
pub = MQTTClient("heap-probe-writer", host, int(port))
pub.connect()
topic = (topics.base(None, cfg["device_id"]) + "settings").encode()
caps = (b"3.68", b"7.36", b"1.0", b"5.5", b"11")

now = 0
plugged = False
draw = 0
peak_alloc = 0
peak_live = 0
sessions = 0
writes = 0
ticks = int(hours * 360000)
start = time.ticks_ms()
for i in range(ticks):
    now += 10
    minute = (i // 6000) % 130  # plugged for 120 min, then out for 10
    if (minute < 120) != plugged:
        plugged = not plugged
        sessions += plugged
    pwm = 0 < board.pilot_counts < 10000
    board.now = now
    board.high_mv = (6000 if pwm else 9000) if plugged else 12000
    board.low_mv = -12000 if pwm else board.high_mv
    board.feedback = board.contactor_drive
    draw = board.pilot_counts * 6 // 1000 if (pwm and board.contactor_drive) else 0
    board.current_da = draw
    board.power_w = draw * 23
    board.energy_wh = now // 3600000 * 7
    agent.tick(now)
    if i % 1000 == 0:
        writes += 1
        pub.publish(topic, b'{"requestId":"w%d","settings":{"max_charge_rate":{"value":%s,'
                    b'"unit":"kw"}}}' % (writes, caps[writes % len(caps)]))
    if i % 100 == 0:
        a = gc.mem_alloc()
        if a > peak_alloc:
            peak_alloc = a
    if i % 6000 == 0:
        gc.collect()
        a = gc.mem_alloc()
        if a > peak_live:
            peak_live = a
wall = time.ticks_diff(time.ticks_ms(), start) / 1000
expected = int(float(caps[writes % len(caps)]) * 1000)
t0 = time.ticks_ms()
while agent.settings.cap_w != expected and time.ticks_diff(time.ticks_ms(), t0) < 10000:
    time.sleep(0.1)  # the last write may still be on its way through the broker
print(json.dumps({"hours": hours, "ticks": ticks, "wall_s": wall, "peak_alloc": peak_alloc,
                  "peak_live": peak_live, "heap": gc.mem_alloc() + gc.mem_free(),
                  "sessions": sessions, "cap_writes": writes, "connects": uplink.connects,
                  "final_cap_w": agent.settings.cap_w, "expected_cap_w": expected,
                  "stages": stages, "script": script}))
