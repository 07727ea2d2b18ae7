# A long session under micropython with the agent's fronts up, in virtual time: the control
# loop runs flat out on a minimal vehicle model, requests arrive every 10 s of virtual time,
# and the heap is sampled. Prints one JSON line. The agent is wired as runner.serve wires a
# board's (the MQTT uplink with Home Assistant discovery, the HTTP front, the worker thread);
# only the control loop is this script's, to run in virtual time. FRONTS:
#   mqtt       the MQTT uplink; a second MQTT client writes the cap every 10 s
#   mqtt+http  both; the cap written over MQTT every 10 s, the device read asked over HTTP
#              every 10 s (as a home energy manager polls it)
#   http       the HTTP front alone (a charger with no broker): a read and a cap write over
#              HTTP in turn, every 10 s
#   micropython -X heapsize=64K heap_probe.py HOST:PORT[,HOST:PORT...]|- HOURS STATE_DIR \
#       [FRONTS HTTP_PORT]
# (several brokers: the agent's broker list, as a config gives it; the session is on the first)
import gc
import select
import socket
import time


class HttpClient:
    # One request at a time to the HTTP front, sent at once and its answer read a piece per
    # tick while the control loop goes on (as a client on the network would, beside it);
    # wait() blocks for the rest. Reads into one buffer: the probe keeps no answer.
    def __init__(self, port, path, token):
        self.addr = socket.getaddrinfo("127.0.0.1", port)[0][-1]
        self.path = path.encode()
        self.token = token.encode()
        self.buf = bytearray(512)
        self.poller = select.poll()
        self.sock = None
        self.status = 0
        self.answers = {}  # status: how many

    def send(self, body=None):
        s = socket.socket()
        s.connect(self.addr)
        if body is None:
            s.write(b"GET %s HTTP/1.1\r\nAuthorization: Bearer %s\r\n\r\n"
                    % (self.path, self.token))
        else:
            s.write(b"POST %s/settings HTTP/1.1\r\nAuthorization: Bearer %s\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (self.path, self.token, len(body), body))
        s.setblocking(False)
        self.poller.register(s, select.POLLIN)
        self.sock = s
        self.status = 0

    def step(self, timeout_ms=0):
        # Reads what has come; True once the answer is whole (the front closes).
        while self.sock is not None and self.poller.poll(timeout_ms):
            n = self.sock.readinto(self.buf)
            if n is None:
                continue
            if n and not self.status:
                self.status = int(bytes(self.buf[9:12]))
            if not n:
                self.poller.unregister(self.sock)
                self.sock.close()
                self.sock = None
                self.answers[self.status] = self.answers.get(self.status, 0) + 1
        return self.sock is None

    def wait(self):
        t0 = time.ticks_ms()
        while not self.step(100):
            if time.ticks_diff(time.ticks_ms(), t0) > 10000:
                raise SystemExit("the HTTP front did not answer in 10 s")


# Here: the interpreter, this script's own bytecode and its client's class, which a board
# does not hold (its main is frozen with the agent); memory.session takes them out.
gc.collect()
script = gc.mem_alloc()
import json
import sys
import _thread
import sim_board as sim
import runner
import topics
from agent import Agent

TOKEN = "heap-probe-token-0123456789"
CAPS = (b"3.68", b"7.36", b"1.0", b"5.5", b"11")
broker, hours, state_dir = sys.argv[1], float(sys.argv[2]), sys.argv[3]
fronts = sys.argv[4] if len(sys.argv) > 4 else "mqtt"
names = fronts.split("+")
if "mqtt" in names:
    from mqtt_uplink import MqttUplink
    from umqtt.simple import MQTTClient
if "http" in names:
    from http_uplink import HttpUplink


def live():
    gc.collect()
    return gc.mem_alloc()


stages = {"imported": live()}  # where the live heap goes: the code, the objects, a session
cfg = {"device_id": "heap-probe", "supply_voltage": 230, "phases": 1, "max_current": 32,
       "uplinks": names, "keepalive": 30}
if "mqtt" in names:
    cfg["broker"] = broker.split(",") if "," in broker else broker
if "http" in names:
    cfg["http"] = {"token": TOKEN, "port": int(sys.argv[5]), "host": "127.0.0.1"}
board = sim.Board(cfg, sim.FileStore(state_dir))
board.unix_base_ms = 1795478400000
agent = Agent(board)
mqtt = http = None
if "mqtt" in names:
    mqtt = MqttUplink(cfg, board, agent)  # with Home Assistant discovery, as configured
if "http" in names:
    http = HttpUplink(cfg, board, agent)
stages["wired"] = live()
_thread.start_new_thread(runner.worker_loop, (agent, board))
for uplink in (mqtt, http):
    if uplink:
        _thread.start_new_thread(uplink.run, ())
t0 = time.ticks_ms()
while (mqtt and mqtt.connects < 1) or (http and http.sock is None):
    time.sleep(0.05)
    if time.ticks_diff(time.ticks_ms(), t0) > 20000:
        raise SystemExit("an uplink did not come up")
if mqtt:  # the first state report out: the session as it stands between requests
    while agent.seq < 1 and time.ticks_diff(time.ticks_ms(), t0) < 20000:
        time.sleep(0.05)
    time.sleep(0.2)
stages["connected"] = live()
pub = client = None
if mqtt:
    host, port = broker.split(",")[0].split(":")
    pub = MQTTClient("heap-probe-writer", host, int(port))
    pub.connect()
    topic = (topics.base(None, cfg["device_id"]) + "settings").encode()
if http:
    client = HttpClient(cfg["http"]["port"], topics.path(cfg["device_id"], "read"), TOKEN)

now = 0
plugged = False
draw = 0
peak_alloc = 0
peak_live = 0
sessions = 0
writes = 0
turn = 0
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
    if client:
        # The answer read as it comes; a request every 10 s, 5 ticks before the minute's
        # sample below, so that one in six of them is on its way when the heap is sampled.
        if i % 1000 == 994:
            client.wait()
        elif i % 1000 == 995:
            turn += 1
            if mqtt or turn % 2:
                client.send()
            else:
                writes += 1
                client.send(b'{"max_charge_rate":{"value":%s,"unit":"kw"}}'
                            % CAPS[writes % len(CAPS)])
        else:
            client.step()
    if pub and i % 1000 == 0:
        writes += 1
        pub.publish(topic, b'{"requestId":"w%d","settings":{"max_charge_rate":{"value":%s,'
                    b'"unit":"kw"}}}' % (writes, CAPS[writes % len(CAPS)]))
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
if client:
    client.wait()
expected = int(float(CAPS[writes % len(CAPS)]) * 1000)
t0 = time.ticks_ms()
while agent.settings.cap_w != expected and time.ticks_diff(time.ticks_ms(), t0) < 10000:
    time.sleep(0.1)  # the last write may still be on its way through the broker
print(json.dumps({"hours": hours, "ticks": ticks, "wall_s": wall, "peak_alloc": peak_alloc,
                  "peak_live": peak_live, "heap": gc.mem_alloc() + gc.mem_free(),
                  "fronts": fronts, "sessions": sessions, "cap_writes": writes,
                  "connects": mqtt.connects if mqtt else None,
                  "http_answers": client.answers if client else None,
                  "final_cap_w": agent.settings.cap_w, "expected_cap_w": expected,
                  "stages": stages, "script": script}))
