"""A site on the bench: one supply with its fuse, the household's load on each phase, and the
site meter that sees all of it (docs/site.md; docs/bench.md, "A site").

A model only, with no MQTT and no clock of its own: make sim's site (site_bench.py) runs it
in real time, the site rig (site_rig.py) in bench time.
"""
import json
import math

from tools.json_input import loads
from tools.paths import cpython_paths

cpython_paths()
import topics  # noqa: E402  (the site's own topics, defined once in the firmware)

METER_PERIOD_MS = 1000  # the simulated meter publishes once a second, as a Shelly 3EM can
HOUSEHOLD_MAX_A = 1000  # a household current above this is a typing mistake, not a house


def bench_topic(site_id, name):
    """The site's bench topics: household and meter (to the bench), readings (from it)."""
    return "bench/site/%s/%s" % (site_id, name)


def default_lines(n, charger_phases, site_phases):
    """Where each charger's phases land: a 3-phase charger on L1-L3; single-phase chargers
    on a 3-phase site spread over L1, L2, L3, L1, ... in order."""
    if charger_phases == 3:
        return [[1, 2, 3] for _ in range(n)]
    return [[k % site_phases + 1] for k in range(n)]


def check_currents(currents, phases, what="currents"):
    """A sparse list of per-phase currents, checked: up to `phases` entries, each a current
    in A or null (that phase unchanged). Raises ValueError with one line."""
    if type(currents) is not list or not 0 < len(currents) <= phases:
        raise ValueError("%s must be a list of up to %d current%s in A (null leaves a phase "
                         "as it is)" % (what, phases, "s" if phases > 1 else ""))
    for v in currents:
        if v is not None and (type(v) not in (int, float) or not math.isfinite(v) or
                              not 0 <= v <= HOUSEHOLD_MAX_A):
            raise ValueError("%s: %r is not a current from 0 to %d A"
                             % (what, v, HOUSEHOLD_MAX_A))
    return currents


def load_day(path, phases):
    """A scripted household: a JSON list of [t_seconds, [L1, L2, L3]], as (ms, currents)
    in time order. Raises ValueError with one line naming the file and the entry."""
    try:
        with open(path) as f:
            day = loads(f.read())
    except OSError as e:
        raise ValueError("%s: %s" % (path, e.strerror or e))
    except ValueError as e:
        raise ValueError("%s is not valid JSON: %s" % (path, e))
    if type(day) is not list or not day:
        raise ValueError("%s must be a non-empty list of [t_seconds, [L1, L2, L3]]" % path)
    out = []
    for i, entry in enumerate(day):
        where = "%s entry %d" % (path, i)
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) not in (int, float) \
                or not math.isfinite(entry[0]) or entry[0] < 0:
            raise ValueError("%s must be [t_seconds >= 0, [L1, L2, L3]]" % where)
        out.append((int(entry[0] * 1000), check_currents(entry[1], phases, where + "'s currents")))
    return sorted(out, key=lambda e: e[0])


class Schedule:
    """A scripted household played in bench time: due(t) gives the entries reached by t."""

    def __init__(self, entries):
        self.entries = entries
        self.next = 0

    def due(self, t_ms):
        while self.next < len(self.entries) and self.entries[self.next][0] <= t_ms:
            self.next += 1
            yield self.entries[self.next - 1][1]


class Site:
    """The supply, its household load and where each charger's phases land."""

    def __init__(self, site_id, fuse, phases, lines):
        self.id = site_id
        self.fuse = fuse  # A per phase
        self.phases = phases
        self.lines = lines  # {charger id: the site phases of its L1 (L1-L3)}
        self.household = [0.0] * phases
        self.meter_on = True
        self.prefix = topics.site(site_id)  # the site's own topics: site/{id}/...
        self.meter_topic = self.prefix + topics.SITE_METER

    def set_household(self, currents):
        """Sparse: a shorter list leaves the later phases, null leaves that phase."""
        for i, v in enumerate(check_currents(currents, self.phases)):
            if v is not None:
                self.household[i] = float(v)

    def currents(self, draws):
        """The site current per phase: the household plus each charger's measured current
        (draws: {charger id: A per phase}) on the phases it is connected to."""
        out = list(self.household)
        for cid, amps in draws.items():
            for p in self.lines[cid]:
                out[p - 1] += amps
        return out

    def meter_payload(self, unix_ms, draws):
        """What the site meter's bridge publishes on site/{id}/meter."""
        return json.dumps({"ts": unix_ms, "currents": [round(c, 2) for c in
                                                       self.currents(draws)]}).encode()

    def readings(self, t, chargers):
        """bench/site/{id}/readings: chargers is {id: {"current", "offered", "powerOn"}}."""
        draws = {cid: c["current"] for cid, c in chargers.items()}
        cur = self.currents(draws)
        return {"t": t, "currents": [round(c, 2) for c in cur], "fuse": self.fuse,
                "overFuse": any(c > self.fuse for c in cur),
                "household": [round(h, 2) for h in self.household], "meter": self.meter_on,
                "chargers": {cid: dict(c, phases=self.lines[cid]) for cid, c in chargers.items()}}
