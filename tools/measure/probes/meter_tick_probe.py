# The control tick while the Modbus meters are polled, and the heap their wiring takes
# (docs/meters.md, "Measured"). The agent's tick runs in real time every 10 ms in this thread,
# as a board's control thread runs it (sleep to the deadline, then tick), in turns with and
# without the poll thread (meter_poll.Poller.run, as runner.threaded starts it) reading the
# bench's meters (tools/bench/meter_peer.py at TCP_PORTS: an EV meter and a mains meter on
# one bus) every PERIOD_MS. Each tick's lateness (its deadline to its start) and its own
# time are kept (in histograms: the heap is an ESP32's), and whether a poll was under way.
# Run by make bench (tools/measure/meters.py).
#   micropython meter_tick_probe.py PORT,PORT PERIOD_MS TURN_S TURNS STATE_DIR
# Prints one JSON line.
import gc
import json
import sys
import time
import _thread
from array import array
import sim_board as sim
import runner
from agent import Agent

ports = [int(p) for p in sys.argv[1].split(",")]
period_ms, turn_s, turns, state_dir = (int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]),
                                       sys.argv[5])
SITE = {"id": "probe", "fuse_current": 25, "phases": [1, 2, 3], "meter_timeout_s": 10,
        "fallback_current": 0}


def live():
    gc.collect()
    return gc.mem_alloc()


def charger(name, meters):
    # An agent with site balancing wired as runner.serve wires it, with or without meters.
    cfg = {"device_id": name, "supply_voltage": 230, "phases": 3, "max_current": 16,
           "site": SITE}
    if meters:
        cfg["meters"] = {"bus": {"baud": 9600, "de": 4}, "ev": {"model": "SDM630", "address": 11},
                         "mains": {"model": "SDM630", "address": 12}, "period_ms": period_ms}
        cfg["bench_meter_ports"] = ports
    board = sim.Board(cfg, sim.FileStore(state_dir + "/" + name))
    agent = Agent(board)
    runner.site_balancer(agent, cfg)
    return board, agent


first = charger("first", False)  # what building a charger loads once (site_balance ...)
base = live()
plain = charger("plain", False)
without = live() - base
base = live()
import meter_watch  # noqa: F401  what a board with meters imports beyond the agent
import site_local  # noqa: F401
imported = live() - base
base = live()
board, agent = charger("metered", True)
wired = live() - base - without  # the meters' part: bus, meters, watch, local site
poller = agent.meters.poller

polling = [False]  # a poll under way (set by the poll thread)
ended = _thread.allocate_lock()
real_poll = poller.poll


def marked_poll():
    polling[0] = True
    real_poll()
    polling[0] = False


poller.poll = marked_poll


def poll_thread():
    with ended:
        poller.run()


class Figures:
    # One figure's distribution in a fixed histogram (the heap is an ESP32's: no list per
    # tick) of BUCKETS buckets bucket_us wide, the last one open; exact count, sum, maximum.
    BUCKETS = 500

    def __init__(self, bucket_us):
        self.bucket_us = bucket_us
        self.counts = array("H", bytes(2 * self.BUCKETS))
        self.n = self.total = self.top = 0

    def add(self, us):
        self.counts[min(self.BUCKETS - 1, us // self.bucket_us)] += 1
        self.n += 1
        self.total += us
        if us > self.top:
            self.top = us

    def at(self, share):
        # The upper edge of the bucket holding that share of the values (capped at the max).
        want, seen = self.n * share, 0
        for i in range(self.BUCKETS):
            seen += self.counts[i]
            if seen >= want:
                return min(self.top, (i + 1) * self.bucket_us)
        return self.top

    def summary(self):
        if not self.n:
            return None
        return {"ticks": self.n, "p50_us": self.at(0.5), "p99_us": self.at(0.99),
                "max_us": self.top, "mean_us": self.total // self.n}


def figures():
    return {"late": Figures(20), "tick": Figures(10)}  # 20 us up to 10 ms; 10 us up to 5 ms


def turn(seconds, polled, during):
    deadline = time.ticks_add(time.ticks_us(), 10000)
    end = time.ticks_add(time.ticks_ms(), int(seconds * 1000))
    while time.ticks_diff(end, time.ticks_ms()) > 0:
        wait = time.ticks_diff(deadline, time.ticks_us())
        if wait > 0:
            time.sleep_us(wait)
        t0 = time.ticks_us()
        under_way = polling[0]
        board.now = time.ticks_ms() & 0x3FFFFFFF
        agent.tick(board.now)
        t1 = time.ticks_us()
        late, spent = time.ticks_diff(t0, deadline), time.ticks_diff(t1, t0)
        polled["late"].add(late)
        polled["tick"].add(spent)
        if under_way or polling[0]:
            during["late"].add(late)
            during["tick"].add(spent)
        deadline = time.ticks_add(deadline, 10000)
        if time.ticks_diff(t1, deadline) > 0:
            deadline = time.ticks_add(t1, 10000)  # overran: do not race to catch up


results = {False: figures(), True: figures()}
during = figures()
board.high_mv = board.low_mv = 9000  # a vehicle in B: the pilot offers current
for i in range(turns):
    on = i % 2 == 1
    if on:
        _thread.start_new_thread(poll_thread, ())
        time.sleep_ms(5)
    turn(turn_s, results[on], during if on else figures())
    if on:
        poller.stop()
        with ended:  # the thread has left run(): the next turn is without it
            pass
ev = agent.meters.ev
print(json.dumps({
    "imported": imported, "wired": wired, "agent_without_meters": without,
    "period_ms": period_ms, "polls": poller.polls, "counts": list(ev.counts),
    "ev_status": ev.status(board.now),
    "without": {k: f.summary() for k, f in results[False].items()},
    "with": {k: f.summary() for k, f in results[True].items()},
    "during_poll": {k: f.summary() for k, f in during.items()}}))
