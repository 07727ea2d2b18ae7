"""The bench page's site view (docs/bench.md, "The page"): what the page's server keeps of a
site bench's bench/site/{id}/readings, and the household and meter controls checked and
answered with the effect the next readings show.

No MQTT here: server.py routes the site's messages to a SiteView and publishes its requests.
"""
import collections
import time

from tools.bench.site import METER_PERIOD_MS, bench_topic, check_currents

SITE_REQUESTS = ("household", "meter")
# The site bench applies a request at once but reports only with its next readings, one
# meter period later; the rest is the trip through the broker, twice.
ANSWER_S = METER_PERIOD_MS / 1000 + 2.0


class SiteView:
    """The latest site readings and the last minutes of them as plot samples."""

    def __init__(self, site_id, phases, history_s):
        self.id = site_id
        self.phases = phases
        self.history_s = history_s
        self.readings = None
        self.history = collections.deque()

    def topic(self, name):
        return bench_topic(self.id, name)

    def snapshot(self):
        return {"id": self.id, "phases": self.phases, "readings": self.readings,
                "history": list(self.history)}

    def take(self, body):
        """A readings message: kept, and one plot sample made of it (None if it is not one)."""
        if not isinstance(body.get("currents"), list) or not isinstance(body.get("chargers"), dict):
            return None
        self.readings = body
        sample = sample_of(body, int(time.time() * 1000))
        self.history.append(sample)
        while self.history and self.history[0]["t"] < sample["t"] - self.history_s * 1000:
            self.history.popleft()
        return sample


def sample_of(r, t):
    """One point of the site plots, flat as the page's timeline draws it: L1..L3 and the fuse
    in A; each charger's measured current and offer under "current:{id}" and "offered:{id}";
    on is the meter (the page greys the time it was silent: the chargers were blind then)."""
    sample = {"t": t, "on": r.get("meter") is not False, "fuse": r.get("fuse")}
    for i, amps in enumerate(r["currents"]):
        sample["L%d" % (i + 1)] = amps
    for cid, c in r["chargers"].items():
        if isinstance(c, dict):
            sample["current:" + cid] = c.get("current")
            sample["offered:" + cid] = c.get("offered")
    return sample


def check(site, name, body):
    """A site control from a page, checked as the site bench needs it; an error text or None."""
    if name == "household":
        if set(body) != {"currents"}:
            return 'household takes {"currents": [L1, L2, L3]} in A'
        try:
            check_currents(body["currents"], site.phases)
        except ValueError as e:
            return str(e)
    elif set(body) != {"on"} or type(body["on"]) is not bool:
        return 'meter takes {"on": true | false}'
    return None


def took(name, body):
    """Whether a site readings message shows the request applied."""
    if name == "meter":
        return lambda r: r.get("meter") is body["on"]
    want = [(i, round(float(v), 2)) for i, v in enumerate(body["currents"]) if v is not None]
    return lambda r: all(i < len(r.get("household") or ()) and r["household"][i] == v
                         for i, v in want)


def describe(name, r):
    """One line for a person: what the site bench did, as its readings show it."""
    if name == "meter":
        return ("site bench: meter back on" if r["meter"] else
                "site bench: meter silenced (each charger falls back after its meter timeout)")
    return "site bench: household %s; the meter reads %s against the %s A fuse" % (
        phases(r["household"]), phases(r["currents"]), _num(r.get("fuse")))


def phases(values):
    return ", ".join("L%d %s A" % (i + 1, _num(v)) for i, v in enumerate(values))


def _num(x):
    return ("%.2f" % x).rstrip("0").rstrip(".") if isinstance(x, (int, float)) else str(x)
