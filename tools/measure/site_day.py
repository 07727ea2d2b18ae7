"""A scripted site day in bench time, measured against docs/site.md's "What works means".

Three chargers on a 3 x 25 A supply: charger-1 three-phase, charger-2 and charger-3 single-
phase on L1, each agent under micropython from the compiled .mpy with its own board,
vehicle and flash, stepped tick by tick on one bench clock with the site meter and the
site's MQTT traffic simulated in the same process (tools/bench/site_rig.py). Vehicles
follow a new offer after 1 s, 2.5 s and 5 s (IEC 61851-1 allows 5 s), arrive and leave;
the household has a base load, a 9 A kettle, a 13 A oven with its thermostat, and an
evening load; the meter fails for 90 s, charger-2's power is cut for 4 minutes, and a
broken device publishes garbage on the site's topics for a minute.

    python -m tools.measure.site_day [--interp cpython] [--trace FILE.csv]

prints the table; make bench prints the same rows (tools/measure/perf.py).
"""
import argparse
import csv
import os
import shutil
import sys
import tempfile
import time

from tools.bench.rig import TICK_MS, UNIX_BASE_MS
from tools.bench.site import METER_PERIOD_MS
from tools.bench.site_rig import LATENCY_MS, build
from tools.bench.vehicle import offered_amps
from tools.paths import cpython_paths

cpython_paths()
import site_share  # noqa: E402  (the oracle: the firmware's own allocation, on true data)

S = 1000
MIN = 60 * S
SAMPLE_MS = 100  # the log's resolution (overload is tracked every tick)
STEADY_MS = 30 * S  # a sample this long after the last event of the day is steady state
AFTER_STEP_MS = 2 * S  # an overload starting this soon after a household step up is its
# The chargers' part after a step up: the next reading, its trip through the broker, and the
# tick that applies it.
REACT_MS = METER_PERIOD_MS + LATENCY_MS + 2 * TICK_MS

SITE = {"id": "home", "fuse_current": 25, "meter_timeout_s": 10, "fallback_current": 0,
        "margin_current": 1}
# id: the charger's phases, where they land on the site, and its vehicle.
CHARGERS = {
    "charger-1": {"phases": 3, "lines": [1, 2, 3], "ev_max": 16, "follow_ms": 1000},
    "charger-2": {"phases": 1, "lines": [1], "ev_max": 32, "follow_ms": 2500},
    "charger-3": {"phases": 1, "lines": [1], "ev_max": 32, "follow_ms": 5000},
}
KETTLE = [9, 0, 0]
OVEN = [0, 13, 0]


def _oven_cycles(start_min, end_min):
    # The oven's thermostat once it is hot: 2 minutes off, 3 on.
    out = []
    t = start_min
    while t + 5 <= end_min:
        out += [(t * MIN, "load", "oven", [0, 0, 0]), ((t + 2) * MIN, "load", "oven", OVEN)]
        t += 5
    return out


# (bench ms, what, ...): the day, in time order.
DAY = sorted([
    (0, "load", "base", [0.8, 0.5, 0.6]),
    (2 * MIN, "arrive", "charger-1"),
    (5 * MIN, "arrive", "charger-2"),
    (8 * MIN, "arrive", "charger-3"),
    (15 * MIN, "load", "kettle", KETTLE),
    (18 * MIN, "load", "kettle", [0, 0, 0]),
    (25 * MIN, "load", "oven", OVEN),
] + _oven_cycles(35, 55) + [
    (55 * MIN, "load", "oven", [0, 0, 0]),
    (38 * MIN, "load", "evening", [3, 3, 3]),
    (43 * MIN, "load", "kettle", KETTLE),
    (46 * MIN, "load", "kettle", [0, 0, 0]),
    (85 * MIN, "garbage", True),
    (86 * MIN, "garbage", False),
    (60 * MIN, "meter", False),
    (60 * MIN + 90 * S, "meter", True),
    (66 * MIN, "power", "charger-2", False),
    (70 * MIN, "power", "charger-2", True),
    (75 * MIN, "load", "kettle", KETTLE),
    (77 * MIN, "load", "kettle", [0, 0, 0]),
    (80 * MIN, "leave", "charger-2"),
    (95 * MIN, "load", "evening", [0, 0, 0]),
    (100 * MIN, "leave", "charger-1"),
    # The slowest vehicle alone at a high current when the kettle goes on: it alone must
    # absorb the step, and it takes the 5 s IEC 61851-1 allows.
    (105 * MIN, "load", "kettle", KETTLE),
    (107 * MIN, "load", "kettle", [0, 0, 0]),
    (110 * MIN, "leave", "charger-3"),
], key=lambda e: e[0])
DAY_MS = 115 * MIN

# What a broken device puts on the site's topics: one a second, in turn.
GARBAGE = [("meter", b'{"currents": [1e999, 0, 0]}'), ("chargers/bogus", b'{"ts": "x"}'),
           ("meter", b'{"currents": [-5, 1, 1]}'),
           ("chargers/bogus", b'{"ts": 1, "phases": [9], "drawA": 1, "wantsA": 1, "offeredA": 1}'),
           ("meter", b"\xff\xfe not json")]


class Log:
    """What the bench measured, for the figures: overload episodes every tick, the rest
    every SAMPLE_MS, and the scripted events."""

    def __init__(self, sr, chargers, site):
        self.sr = sr
        self.chargers = chargers
        self.site = site
        self.fuse = site["fuse_current"]
        self.samples = []  # (t, household, {id: draw}, {id: offer}, {id: wants})
        self.events = []  # (t, what, ...)
        self.steps = []  # (t, phase, +/- amps): household changes
        self.episodes = []  # [phase, start, end, peak A]
        self._open = {}  # phase -> the episode in progress
        self.wants = {cid: 0.0 for cid in chargers}  # the vehicle's true need (0: none)
        sr.observers.append(self._tick)

    def _tick(self, sr):
        t = sr.t
        for p, amps in enumerate(sr.currents()):
            ep = self._open.get(p)
            if amps > self.fuse + 0.01:
                if ep is None:
                    ep = self._open[p] = [p + 1, t, t, amps]
                    self.episodes.append(ep)
                ep[2] = t + TICK_MS
                ep[3] = max(ep[3], amps)
            elif ep is not None:
                del self._open[p]
        if t % SAMPLE_MS == 0:
            self.samples.append((t, list(sr.site.household), sr.draws(), sr.offers(),
                                 dict(self.wants)))

    def set_household(self, t, new):
        for p, (a, b) in enumerate(zip(self.sr.site.household, new)):
            if abs(a - b) > 0.01:
                self.steps.append((t, p + 1, b - a))
        self.sr.site.set_household(new)


class Day:
    """Plays DAY on a site rig and keeps the log."""

    def __init__(self, sr, day=DAY, chargers=CHARGERS, site=SITE):
        self.sr = sr
        self.day = day
        self.chargers = chargers
        self.log = Log(sr, chargers, site)
        self.loads = {}
        self.garbage = False
        self.powered = {cid: True for cid in chargers}
        self.plugged = {cid: False for cid in chargers}

    def run(self, until_ms, on_minute=None):
        i = 0
        while self.sr.t < until_ms:
            while i < len(self.day) and self.day[i][0] <= self.sr.t:
                self.apply(self.day[i][1:])
                i += 1
            if self.garbage and self.sr.t % S == 0:
                name, payload = GARBAGE[self.sr.t // S % len(GARBAGE)]
                self.sr.publish(self.sr.prefix + name, payload)
            self.sr.step()
            if on_minute and self.sr.t % MIN == 0:
                on_minute(self.sr.t // MIN)

    def apply(self, what):
        t = self.sr.t
        kind = what[0]
        self.log.events.append((t,) + tuple(what))
        if kind == "load":
            self.loads[what[1]] = what[2]
            total = [sum(v[p] for v in self.loads.values()) for p in range(3)]
            self.log.set_household(t, total[:self.sr.site.phases])
        elif kind == "arrive":
            self.sr.ev(what[1], connected=True, request=True)
            self.plugged[what[1]] = True
        elif kind == "leave":
            self.sr.ev(what[1], connected=False)
            self.plugged[what[1]] = False
        elif kind == "meter":
            self.sr.site.meter_on = what[1]
        elif kind == "power":
            (self.sr.power_on if what[2] else self.sr.power_cut)(what[1])
            self.powered[what[1]] = what[2]
        elif kind == "garbage":
            self.garbage = what[1]
        for cid, c in self.chargers.items():
            ok = self.plugged[cid] and self.powered[cid]
            self.log.wants[cid] = min(c["ev_max"], c.get("max_current", 32)) if ok else 0.0


# -- the figures

def best(site, chargers, household, wants, t, margin=True):
    """The allocation with every input true and no delay: the firmware's own rules (site_share)
    on the real household and the vehicles' real needs. {id: A}, 0 for those not asking."""
    fuse = int(site["fuse_current"] * 10)
    m = int(site["margin_current"] * 10) if margin else 0
    rows = [(cid, chargers[cid]["lines"], 0, int(w * 10), True) for cid, w in wants.items()]
    got = site_share.shares(fuse, m, [int(round(h * 10)) for h in household], rows,
                            UNIX_BASE_MS + t)
    return {cid: got.get(cid, 0) / 10 for cid in wants}


def offer_changes(bench, since, until):
    """(t, offered A) of every change of the offered current in [since, until)."""
    out = []
    last = None
    for t, counts in bench.duty_log:
        duty = 100.0 * counts / bench.pwm_full
        amps = (offered_amps(duty) or 0.0) if 0 < counts < bench.pwm_full else 0.0
        if since <= t < until and (last is None or abs(amps - last) >= 0.05):
            out.append((t, amps))
        last = amps
    return out


def offer_at(bench, t):
    amps = 0.0
    for when, counts in bench.duty_log:
        if when > t:
            break
        duty = 100.0 * counts / bench.pwm_full
        amps = (offered_amps(duty) or 0.0) if 0 < counts < bench.pwm_full else 0.0
    return amps


class Figures:
    """Every figure of the table, from a day that has run: figures(day) is the dict."""

    def __init__(self, day):
        self.log, self.sr = day.log, day.sr
        self.site, self.chargers = self.log.site, self.log.chargers
        self.event_times = sorted(e[0] for e in self.log.events)
        self._by_t = {s[0]: s for s in self.log.samples}

    def sample(self, t):
        first, last = self.log.samples[0][0], self.log.samples[-1][0]
        return self._by_t[min(max(t - t % SAMPLE_MS, first), last)]

    def best_at(self, t, margin=True):
        s = self.sample(t)
        return best(self.site, self.chargers, s[1], s[4], t, margin)

    def steady(self, t):
        prev = [e for e in self.event_times if e <= t]
        return not prev or t - prev[-1] >= STEADY_MS

    def all(self):
        f = self.overload()
        f.update(react=self.react(), reclaim=self.reclaim(), fallback_s=self.fallback(),
                 leave=self.leave(), changes_per_min=self.stability(),
                 ignored=self.ignored(), **self.fairness(), **self.energy())
        return f

    def overload(self):
        # Every episode above the fuse, and whether a household step up on its phase (which
        # the chargers cannot foresee) explains it.
        fuse = self.site["fuse_current"]
        ups = [(t, p) for t, p, d in self.log.steps if d > 0]
        eps = []
        for phase, start, end, peak in self.log.episodes:
            explained = any(p == phase and 0 <= start - t <= AFTER_STEP_MS for t, p in ups)
            eps.append({"phase": phase, "start": start, "s": (end - start) / S,
                        "peak": peak, "explained": explained})
        return {"episodes": eps, "overload_s_total": sum(e["s"] for e in eps),
                "overload_worst_s": max([e["s"] for e in eps] or [0]),
                "overload_worst_pct": max([100 * (e["peak"] / fuse - 1) for e in eps] or [0]),
                "overload_unexplained": [e for e in eps if not e["explained"]]}

    def react(self):
        # After a household step up, how soon is every charger on that phase at its new
        # share? The chargers' part of an overload; the rest is how fast the vehicles follow.
        out = []
        for t, p, d in self.log.steps:
            if d <= 0:
                continue
            target = self.best_at(t + SAMPLE_MS)  # the step is applied after t's sample
            worst = None
            for cid, c in self.chargers.items():
                bench = self.sr.rigs[cid].bench
                if p not in c["lines"] or offer_at(bench, t) <= target[cid] + 0.5:
                    continue
                down = [tt for tt, a in offer_changes(bench, t, t + 30 * S)
                        if a <= target[cid] + 0.5]
                took = (down[0] - t) / S if down else float("inf")
                worst = took if worst is None else max(worst, took)
            if worst is not None:
                out.append({"t": t, "phase": p, "s": worst})
        return out

    def reclaim(self):
        # After a household step down: 90 % of what the chargers on that phase could take,
        # drawn within 15 s?
        out = []
        for t, p, d in self.log.steps:
            if d >= 0:
                continue
            on_p = [cid for cid, c in self.chargers.items() if p in c["lines"]]
            b0, b1 = self.best_at(t - SAMPLE_MS), self.best_at(t + SAMPLE_MS)
            gain = sum(b1[c] for c in on_p) - sum(b0[c] for c in on_p)
            if gain < 1:
                continue  # nothing to take (none asking, or all already at their needs)
            base = sum(self.sample(t - SAMPLE_MS)[2][c] for c in on_p)
            took = None
            for tt in range(t, t + 60 * S, SAMPLE_MS):
                if sum(self.sample(tt)[2][c] for c in on_p) - base >= 0.9 * gain:
                    took = (tt - t) / S
                    break
            got = (sum(self.sample(t + 15 * S)[2][c] for c in on_p) - base) / gain
            out.append({"t": t, "phase": p, "gain": gain, "at15": got, "t90": took})
        return out

    def fallback(self):
        # The meter silent: how long after its last reading is every charger at or below
        # its fallback?
        fallback = self.site["fallback_current"]
        out = []
        for t_off in [e[0] for e in self.log.events if e[1] == "meter" and not e[2]]:
            last = max(r for r in self.sr.readings if r <= t_off)
            worst = 0
            for rig in self.sr.rigs.values():
                if offer_at(rig.bench, last) <= fallback + 0.05:
                    continue
                down = [t for t, a in offer_changes(rig.bench, last, last + 60 * S)
                        if a <= fallback + 0.05]
                worst = max(worst, (down[0] - last) if down else float("inf"))
            out.append(worst / S)
        return out

    def leave(self):
        # A charger leaves (its power cut, or its vehicle unplugged): how soon do the others
        # offer their new shares (within 1 A)?
        out = []
        for e in self.log.events:
            if not ((e[1] == "power" and not e[3]) or e[1] == "leave"):
                continue
            t, gone = e[0], e[2]
            target, prior = self.best_at(t + SAMPLE_MS), self.best_at(t - SAMPLE_MS)
            worst = None
            for cid, rig in self.sr.rigs.items():
                if cid == gone or target[cid] < prior[cid] + 0.5:
                    continue  # it gains nothing from the leaving one
                up = [tt for tt, a in offer_changes(rig.bench, t, t + 120 * S)
                      if a >= target[cid] - 1.0]
                took = (up[0] - t) / S if up else float("inf")
                worst = took if worst is None else max(worst, took)
            if worst is not None:
                out.append({"t": t, "who": gone, "how": e[1], "s": worst})
        return out

    def fairness(self):
        # In steady state, chargers on a common phase that the allocation gives equal shares
        # (equal needs): how far apart are their offers?
        fair, where = 0.0, None
        ids = list(self.chargers)
        for s in self.log.samples[::10]:
            if not self.steady(s[0]):
                continue
            b = best(self.site, self.chargers, s[1], s[4], s[0])
            for i, a in enumerate(ids):
                for c in ids[i + 1:]:
                    common = set(self.chargers[a]["lines"]) & set(self.chargers[c]["lines"])
                    if b[a] > 0 and abs(b[a] - b[c]) < 0.05 and common:
                        d = abs(s[3][a] - s[3][c])
                        if d > fair:
                            fair, where = d, s[0]
        return {"fairness_a": fair, "fairness_at": where}

    def stability(self):
        # The most changes of the offered current per charger in a steady minute (no event
        # in it, nor in the 30 s before it).
        worst = {}
        for cid, rig in self.sr.rigs.items():
            n = 0
            for m in range(0, self.sr.t - MIN + 1, MIN):
                if any(m - STEADY_MS < e < m + MIN for e in self.event_times):
                    continue
                n = max(n, len(offer_changes(rig.bench, m, m + MIN)))
            worst[cid] = n
        return worst

    def energy(self):
        # Delivered, against the best the fuse allows with every input true at once.
        best_wh = 0.0
        for s in self.log.samples:
            b = best(self.site, self.chargers, s[1], s[4], s[0], margin=False)
            best_wh += sum(b[c] * self.chargers[c]["phases"] * self.sr.rigs[c].bench.voltage
                           for c in b) * SAMPLE_MS / 3.6e6
        return {"energy_kwh": sum(r.bench.energy_wh for r in self.sr.rigs.values()) / 1000,
                "best_kwh": best_wh / 1000}

    def ignored(self):
        return {cid: rig.read()["state"]["limits"]["site"]["ignored"]
                for cid, rig in self.sr.rigs.items() if rig.powered}


def figures(day):
    return Figures(day).all()


def rows(f, site=SITE):
    """The table of docs/site.md: (figure, measured, requirement, ok)."""
    timeout = site["meter_timeout_s"]
    unexpl = f["overload_unexplained"]
    longest = sorted(f["episodes"], key=lambda e: -e["s"])[:2]
    r = [("site current above the fuse (worst episode)",
          "%.1f %% above at most; %s (%d episodes, all right after a step up: %s)" % (
              f["overload_worst_pct"], ", then ".join("%.2f s at %d:%02d" % (
                  e["s"], e["start"] // MIN, e["start"] % MIN // S) for e in longest) or "none",
              len(f["episodes"]), "yes" if not unexpl else "no, %d not" % len(unexpl)),
          "only right after a household step up, <= 5 s, <= 45 % above",
          not unexpl and f["overload_worst_s"] <= 5 and f["overload_worst_pct"] <= 45),
         ("site current above the fuse, in total", "%.1f s" % f["overload_s_total"],
          "never in steady state", not unexpl)]
    rt = f["react"]
    r.append(("household step up -> every charger at its new share",
              "%.2f s at worst (%d steps)" % (max(x["s"] for x in rt), len(rt))
              if rt else "no step to follow",
              "the next reading: <= %g s (then the vehicles follow)" % (REACT_MS / S),
              bool(rt) and max(x["s"] for x in rt) <= REACT_MS / S))
    rc = f["reclaim"]
    t90 = [x["t90"] for x in rc]
    r.append(("headroom reclaimed after a household drop",
              "worst %.0f %% at 15 s, 90 %% within %s s (%d drops)" % (
                  100 * min(x["at15"] for x in rc), max(t90) if None not in t90 else "never",
                  len(rc)) if rc else "no drop measured",
              "90 % within 15 s", bool(rc) and None not in t90 and max(t90) <= 15))
    fb = f["fallback_s"]
    r.append(("meter silent -> every charger at its fallback (%g A)" % site["fallback_current"],
              "%.2f s after the last reading" % max(fb) if fb else "not measured",
              "<= %d s (meter_timeout_s + 1)" % (timeout + 1),
              bool(fb) and max(fb) <= timeout + 1))
    lv = f["leave"]
    r.append(("a charger leaves -> the others take its share",
              ", ".join("%s %s: %.1f s" % (x["who"], "power cut" if x["how"] == "power"
                                          else "unplugged", x["s"]) for x in lv)
              if lv else "not measured",
              "<= %d s (meter_timeout_s + 5)" % (timeout + 5),
              bool(lv) and max(x["s"] for x in lv) <= timeout + 5))
    r.append(("fairness, equal needs, steady state", "%.1f A apart at most" % f["fairness_a"],
              "<= 1 A", f["fairness_a"] <= 1.0))
    ch = f["changes_per_min"]
    r.append(("changes of offered current, steady household",
              "%d per minute at most (%s)" % (max(ch.values()), ", ".join(
                  "%s %d" % (c, n) for c, n in ch.items())),
              "<= 2 per charger per minute", max(ch.values()) <= 2))
    r.append(("energy delivered", "%.2f kWh of %.2f kWh possible under the fuse (%.0f %%)" % (
        f["energy_kwh"], f["best_kwh"], 100 * f["energy_kwh"] / f["best_kwh"]),
        "the best with every input true at once, no margin", True))
    r.append(("malformed site messages ignored and counted", ", ".join(
        "%s %d" % (c, n) for c, n in f["ignored"].items()), "every one, none trusted",
        all(n > 0 for n in f["ignored"].values())))
    return r


def run(interp="micropython", trace=None, quiet=False):
    """The day, measured: (figures, rows, bench hours per wall second)."""
    tmp = tempfile.mkdtemp(prefix="site-day-")
    # The meter reads 10 ms before each whole second, and every scripted step comes on a whole
    # second: the chargers learn of each step as late as they can, a whole period after it.
    sr = build(tmp, SITE, CHARGERS, 3, interp, meter_at_ms=METER_PERIOD_MS - TICK_MS)
    day = Day(sr)
    start = time.perf_counter()
    try:
        day.run(DAY_MS, None if quiet else lambda m: m % 15 or print(
            "site day: %d of %d bench minutes" % (m, DAY_MS // MIN), flush=True))
        wall = time.perf_counter() - start
        f = figures(day)
    finally:
        sr.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if trace:
        write_trace(day.log, trace)
    return f, rows(f), DAY_MS / 3.6e6 / wall


def write_trace(log, path):
    """One row a second: household, each charger's draw and offer, the site current."""
    ids = list(log.chargers)
    with open(path, "x", newline="") as fh:  # a new file: never over a user's
        w = csv.writer(fh)
        w.writerow(["t_s", "household"] + ["%s_%s" % (c, k) for c in ids
                                           for k in ("draw", "offer", "wants")])
        for s in log.samples[::10]:
            w.writerow([s[0] / S, "/".join("%.1f" % h for h in s[1])] + [
                "%.2f" % v for c in ids for v in (s[2][c], s[3][c], s[4][c])])


def print_table(rs):
    w0 = max(len(x[0]) for x in rs)
    w1 = max(len(x[1]) for x in rs)
    print("| %s | %s | requirement | |" % ("figure".ljust(w0), "measured".ljust(w1)))
    print("|%s|%s|---|---|" % ("-" * (w0 + 2), "-" * (w1 + 2)))
    for x in rs:
        print("| %s | %s | %s | %s |" % (x[0].ljust(w0), x[1].ljust(w1), x[2],
                                        "ok" if x[3] else "MISSED"))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.measure.site_day", description=__doc__)
    p.add_argument("--interp", choices=("micropython", "cpython"), default="micropython")
    p.add_argument("--trace", help="write one CSV row per bench second to this new file")
    a = p.parse_args(argv)
    if a.trace and os.path.exists(a.trace):
        p.error("%s exists: give --trace a new file's name" % a.trace)
    f, rs, speed = run(a.interp, a.trace)
    for e in f["episodes"]:
        print("overload: L%d at %.1f s for %.2f s, peak %.1f A%s" % (
            e["phase"], e["start"] / S, e["s"], e["peak"],
            "" if e["explained"] else " not after a step up"))
    print("site day: %.3g bench h per wall s" % speed)
    print_table(rs)
    return 0 if all(x[3] for x in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
