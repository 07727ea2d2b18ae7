"""Flash wear of the firmware's real write path, on the ESP32's NVS layout (tools/bench/nvs_model).

The agent runs in this process (CPython) on the simulated board with a store that also feeds
the NVS model; requests go through its real API and its worker runs every 100 ms of virtual
time. The control loop is not ticked: it never writes flash. Each scenario gives the erase
cycles of the most-erased sector per day and the years to 100,000 cycles.

flash_writes() counts the flash writes of the agent under micropython on the file store
(make sim's), against the real changes it was sent.
"""
import json
import os
import random

from tools.bench.nvs_model import CYCLES, ENTRIES, NvsModel, WearStore
from tools.bench.rig import ProcessRig, text
from tools.paths import cpython_paths

cpython_paths()
import sim_board  # noqa: E402
from agent import Agent  # noqa: E402

DAY_MS = 86400 * 1000
WORKER_MS = 100


class _MemStore:
    def __init__(self):
        self.data = {}

    def read(self, key):
        return self.data.get(key)

    def write(self, key, data):
        self.data[key] = bytes(data)


class WearRun:
    """One agent on the simulated board, its flash metered by an NvsModel."""

    def __init__(self, pages=6, seed=1):
        self.model = NvsModel(pages)
        cfg = {"device_id": "wear", "supply_voltage": 230, "phases": 1, "max_current": 32}
        self.board = sim_board.Board(cfg, WearStore(_MemStore(), self.model))
        self.board.unix_base_ms = 1795478400000
        self.agent = Agent(self.board)
        self.rnd = random.Random(seed)
        self.t = 0
        self.n = 0

    def advance(self, ms):
        end = self.t + ms
        while self.t < end:
            step = min(WORKER_MS - self.t % WORKER_MS, end - self.t)
            self.t += step
            self.board.now = self.t
            if self.t % WORKER_MS == 0:
                self.agent.service(self.t)
                # The uplink publishes the events (a charger refuses new commands while
                # more than three actions' events are undelivered); none of it is flash.
                self.agent.flush(lambda kind, payload, retain: None, self.t)

    def request(self, kind, body):
        self.n += 1
        body = dict(body, requestId="w%d" % self.n)
        reply = json.loads(text(self.agent.handle(kind, json.dumps(body).encode(), self.t)))
        assert reply["success"], reply
        return reply

    def cap(self, kw, key="max_charge_rate"):
        return self.request("settings", {"settings": {key: {"value": kw, "unit": "kw"}}})


def _distinct(rnd, last):
    while True:
        kw = round(rnd.uniform(1.4, 11.0), 3)
        if kw != last:
            return kw


def caps_every(period_ms, days=1.0, seed=1):
    """One distinct random cap every `period_ms` for `days`: erase cycles per sector per day."""
    run = WearRun(seed=seed)
    kw = None
    for _ in range(int(days * DAY_MS // period_ms)):
        kw = _distinct(run.rnd, kw)
        run.cap(kw)
        run.advance(period_ms)
    per_day = run.model.max_erases() / days
    return {"writes": run.model.writes, "entries": run.model.entries_written,
            "erases_per_sector_per_day": per_day, "years": _years(per_day),
            "erases": list(run.model.erases)}


def caps_falling(period_ms=1000, step_w=10, days=1.0):
    """A balancer following a rising load: the cap `step_w` lower every `period_ms`, from
    11 kW down to 1.4 kW, then back up: erase cycles per sector per day."""
    run = WearRun()
    w = 11000
    for _ in range(int(days * DAY_MS // period_ms)):
        w = w - step_w if w - step_w >= 1400 else 11000
        run.cap(w / 1000)
        run.advance(period_ms)
    per_day = run.model.max_erases() / days
    return {"writes": run.model.writes, "entries": run.model.entries_written,
            "erases_per_sector_per_day": per_day, "years": _years(per_day)}


def flood(per_s=300, seconds=60, monotone=False, seed=1, key="max_charge_rate"):
    """A one-minute flood of distinct values of a setting, then a quiet minute: the erases
    it cost."""
    run = WearRun(seed=seed)
    gap = 1000 / per_s
    kw = 11.0
    t = 0.0
    for i in range(int(per_s * seconds)):
        kw = round(max(1.4, kw - 0.001), 3) if monotone else _distinct(run.rnd, kw)
        run.cap(kw, key)
        t += gap
        run.advance(int(t) - run.t)
    run.advance(60000)  # the deferred exact value
    return {"writes": run.model.writes, "entries": run.model.entries_written,
            "erases_max_sector": run.model.max_erases(), "erases": list(run.model.erases)}


def renewals(n=1000, every_ms=1000):
    """Dynamic-limit renewals: flash writes they cost (the first limit sets one flag)."""
    run = WearRun()
    run.request("limit", {"limit": {"value": 10, "unit": "a"}, "ttl": 60, "source": "wear"})
    before = run.model.writes
    for i in range(n):
        run.request("limit", {"limit": {"value": 10 + i % 2, "unit": "a"}, "ttl": 60,
                              "source": "wear"})
        run.advance(every_ms)
    return run.model.writes - before


def commands(per_day=20, days=1.0):
    """Commands (idle / charge) through the journal: NVS entries per day, and the years
    that many entries give in steady state (too few erases happen in a day to count)."""
    run = WearRun()
    for i in range(int(per_day * days)):
        run.request("commands", {"action": {"command": ("idle", "charge")[i % 2]},
                                 "onConflict": "cancel_and_replace"})
        run.advance(int(DAY_MS / per_day))
    entries_per_day = run.model.entries_written / days
    per_sector = entries_per_day / ENTRIES / len(run.model.pages)
    return {"writes": run.model.writes, "entries_per_day": entries_per_day,
            "erases_per_sector_per_day": per_sector, "years": _years(per_sector)}


def _per_day(r, days):
    return "%.1f erases/sector/day, %.0f years to 100k cycles (%d NVS entries/day)" % (
        r["erases_per_sector_per_day"], r["years"], r["entries"] / days)


def _years(erases_per_day):
    return float("inf") if erases_per_day == 0 else CYCLES / erases_per_day / 365


def table():
    """The rows make bench prints: (figure, measured, target)."""
    rows = []
    for period_s, days, target in (
            (10, 2, "target >= 10 years"),
            # Every value stands the 5 s spell, so every one is written (each before its
            # reply): the most a writer at a steady pace costs.
            (5, 1, "target >= 10 years (the most a steady pace costs: each value is written)"),
            (1, 0.5, "reported")):
        r = caps_every(period_s * 1000, days=days)
        if period_s == 10:
            day_entries = r["entries"] / days
        rows.append(("flash wear: one distinct cap every %d s" % period_s, _per_day(r, days),
                     target))
    rows.append(("flash wear: a cap 10 W lower every 1 s (a balancer following a rising load)",
                 _per_day(caps_falling(days=0.5), 0.5), "target >= 10 years"))
    for name, kw, key in (("caps/s (random)", False, "max_charge_rate"),
                          ("caps/s (monotone decreasing)", True, "max_charge_rate"),
                          ("failsafe_charge_rate values/s (random)", False,
                           "failsafe_charge_rate")):
        f = flood(monotone=kw, key=key)
        # Wear is entries: in steady state every 126 entries cost one sector erase.
        rows.append(("flash wear: 1 min flood, 300 distinct " + name,
                     "%d writes, %d NVS entries = %.3f days of wear at one cap per 10 s"
                     % (f["writes"], f["entries"], f["entries"] / day_entries),
                     "target < 1 day"))
    rows.append(("flash writes per 1,000 limit renewals", "%d" % renewals(), "target 0"))
    c = commands()
    rows.append(("flash wear: 20 commands/day", "%d NVS entries/day, %.2f erases/sector/day, "
                 "%.0f years" % (c["entries_per_day"], c["erases_per_sector_per_day"],
                                 c["years"]),
                 "reported (2 journal writes each)"))
    return rows


def flash_writes(n, state_dir):
    """Cap writes through the firmware under micropython, the value changing every 10th; a
    flash write is a new inode of the cap's record (each write is a temp file renamed)."""
    rig = ProcessRig(state_dir)
    record = os.path.join(state_dir, "cap")
    writes, changes, value, last = 0, 0, 7.0, None
    try:
        for i in range(n):
            if i % 10 == 0:
                value = 7.0 if value != 7.0 else 7.5
                changes += 1
            assert rig.settings(max_charge_rate=value)["success"]
            ino = os.stat(record).st_ino if os.path.exists(record) else None
            writes += ino is not None and ino != last
            last = ino
    finally:
        rig.close()
    return writes, changes


def flash_writes_row(writes, changes):
    return ("flash writes per 1000 cap writes, 100 ms apart", "%d (%d real changes)"
            % (writes, changes), "target: at most the changes (the first 10 before their "
            "replies, then a burst: a raise once it has stood 5 s, so a flapping cap costs less)")


if __name__ == "__main__":
    for row in table():
        print(" | ".join(row))
