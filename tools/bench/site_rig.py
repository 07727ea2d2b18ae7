"""Several chargers behind one supply, in bench time (docs/bench.md, "A site").

One rig per charger (rig.py: the firmware in-process, or under micropython over the bench
link), all stepped tick by tick on one bench clock; the site meter (site.py) and the site's
MQTT traffic (the meter's readings, the chargers' retained records) are simulated here, with
a fixed broker latency. Everything is in lockstep, so a run is exactly repeatable and an hour
of a site takes a minute or so, whatever the machine's load.
"""
import os

from tools.bench.rig import InProcessRig, ProcessRig, TICK_MS, UNIX_BASE_MS
from tools.bench.site import METER_PERIOD_MS, Site
from tools.bench.vehicle import offered_amps

LATENCY_MS = 50  # broker latency of every site message: a LAN broker, or a meter bridge's hop


def offered(bench):
    """The current the pilot offers now, as the vehicle reads it; 0 without PWM."""
    return (offered_amps(bench.duty_percent) or 0.0) if bench.pwm_on else 0.0


class SiteRig:
    """The site's chargers (rigs, {id: rig}) and its meter (a Site) on one bench clock."""

    def __init__(self, site, rigs, latency_ms=LATENCY_MS, meter_at_ms=METER_PERIOD_MS // 2):
        self.site = site
        self.rigs = rigs  # {charger id: rig}, every rig at bench time 0
        self.latency_ms = latency_ms
        self.meter_at_ms = meter_at_ms  # the meter's phase within its period
        self.meter_clock_ms = 0  # how far the meter's clock is ahead of the chargers'
        self.t = 0
        self.prefix = site.prefix
        self._in_flight = []  # (due bench ms, topic, payload, to: a charger id or None: all)
        self.retained = {}  # topic -> payload, as a broker keeps them
        self.readings = []  # bench ms of every meter reading published
        self.observers = []  # f(site_rig) after every tick
        self.lost = None  # f(topic) -> True: the broker loses that message (a test's fault)
        for rig in rigs.values():
            rig.on_publish = self._published

    # -- the site's MQTT traffic
    def _published(self, topic, payload, retain):
        if not topic.startswith(self.prefix):
            return  # the charger's own topics stay with its rig (rig.published)
        if retain:
            if payload:
                self.retained[topic] = payload
            else:
                self.retained.pop(topic, None)
        self._send(topic, payload)

    def publish(self, topic, payload):
        """A message from another client on the site's broker (a meter bridge, a stranger)."""
        self._send(topic, payload)

    def _send(self, topic, payload, to=None):
        if self.lost is None or not self.lost(topic):
            self._in_flight.append((self.t + self.latency_ms, topic, payload, to))

    def _deliver_due(self):
        due = [m for m in self._in_flight if m[0] <= self.t]
        if due:
            self._in_flight = [m for m in self._in_flight if m[0] > self.t]
            for _, topic, payload, to in due:
                for cid, rig in self.rigs.items():
                    if to is None or to == cid:
                        rig.deliver(topic, payload)

    # -- bench time
    def step(self):
        self.t += TICK_MS
        self._deliver_due()  # what arrived since the last tick, before this tick
        for rig in self.rigs.values():
            rig.step()
        if self.site.meter_on and self.t % METER_PERIOD_MS == self.meter_at_ms:
            payload = self.site.meter_payload(UNIX_BASE_MS + self.meter_clock_ms + self.t,
                                              self.draws())
            self._send(self.site.meter_topic, payload)
            self.readings.append(self.t)
        for f in self.observers:
            f(self)

    def run(self, ms):
        for _ in range(max(1, ms // TICK_MS)):
            self.step()

    def run_until(self, predicate, limit_ms):
        start = self.t
        while not predicate():
            if self.t - start > limit_ms:
                raise AssertionError("condition not met within %d ms" % limit_ms)
            self.step()
        return self.t - start

    # -- what the bench measures
    def draws(self):
        return {cid: rig.bench.current for cid, rig in self.rigs.items()}

    def currents(self):
        """The site current per phase now."""
        return self.site.currents(self.draws())

    def offers(self):
        return {cid: offered(rig.bench) for cid, rig in self.rigs.items()}

    # -- what a person does to it
    def ev(self, cid, **fields):
        self.rigs[cid].ev(**fields)

    def power_cut(self, cid):
        self.rigs[cid].power_cut()

    def power_on(self, cid):
        rig = self.rigs[cid]
        rig.boot()
        for topic, payload in self.retained.items():  # as the broker does on subscribe
            self._send(topic, payload, cid)

    def close(self):
        for rig in self.rigs.values():
            rig.close()


def build(state_dir, site, chargers, site_phases, interp="micropython", **site_rig_kw):
    """A site rig: `site` is the config's site block (without phases), `chargers` is
    {id: {"phases", "lines" (its site phases), "ev_max", "follow_ms"[, "max_current",
    "clock_ms" (its board's Unix ms at bench time 0; None: never set), "install" (more of
    the rig's installation keywords: voltage, cable_current, ...)]}};
    each charger gets its flash in state_dir/id and its vehicle's limits set (not plugged)."""
    lines = {cid: c["lines"] for cid, c in chargers.items()}
    rigs = {}
    try:
        for cid, c in chargers.items():
            d = os.path.join(state_dir, cid)
            os.makedirs(d, exist_ok=True)
            kw = dict(device_id=cid, phases=c["phases"], max_current=c.get("max_current", 32),
                      site=dict(site, phases=c["lines"]),
                      clock_ms=c.get("clock_ms", UNIX_BASE_MS))
            kw.update(c.get("install") or {})
            if interp == "micropython":
                rigs[cid] = ProcessRig(d, "wheel", **kw)
            else:
                rigs[cid] = InProcessRig(d, **kw)
            rigs[cid].ev(followMs=c["follow_ms"], maxCurrent=c["ev_max"])
    except BaseException:
        for rig in rigs.values():
            rig.close()
        raise
    return SiteRig(Site(site["id"], site["fuse_current"], site_phases, lines), rigs,
                   **site_rig_kw)
