# Site balancing (docs/site.md) on the charger itself: the site meter and the other chargers'
# records come in over MQTT, every charger computes the same shares (site_share.py) and
# hands its own to the control core as one ceiling. The control loop applies the fallback
# by itself when no fresh reading has come for meter_timeout_s (ceiling.py), so a
# stalled network can leave only the last share or the fallback, never more.
# An extra of the MQTT uplink (mqtt_uplink.py): on_message runs inside umqtt's callback and
# only stores.
import json
from micropython import const
from api_text import json_fault
from control import elapsed, later, passed
from pilot import MIN_CURRENT
import site_share
from ceiling import SITE
import topics

_MAX_PAYLOAD = const(512)  # a meter reading or a charger record is far smaller
# A share rises only by at least this much: the meter's rounding and each charger's own
# measuring leave a tenth of an amp or two of noise in every reading, which must not make the
# offer flap up and down (measured: make bench's site day, docs/site.md).
_RAISE_STEP_DA = const(5)
# Between readings a record also goes out when this charger's draw moved this much, or its
# need or offer changed, at most once per _RECORD_GAP_MS (docs/site.md: "on change").
_DRAW_STEP_DA = const(5)
_RECORD_GAP_MS = const(250)
# An excess is taken on again after this: a vehicle follows a lower offer within 5 s
# (IEC 61851-1), and the next reading shows it (docs/site.md).
_FOLLOW_MS = const(6000)
_BACKOFF_MAX = const(3)  # a rise after collisions takes at least 1/8 of the free current


def _number(v, top):
    # A finite, non-negative number no larger than `top`, else None.
    if type(v) not in (int, float) or v - v != 0 or not 0 <= v <= top:
        return None
    return v


class SiteBalancer:
    def __init__(self, cfg, agent):
        s = cfg["site"]
        self.id = s["id"]
        self.fuse_da = int(s["fuse_current"] * 10)
        self.margin_da = int(s.get("margin_current", 1) * 10)
        self.fallback_da = int(s.get("fallback_current", 0) * 10)
        self.timeout_ms = int(s.get("meter_timeout_s", 10) * 1000)
        self.phases = list(s.get("phases", [1]))
        self.agent = agent
        self.device_id = cfg["device_id"]
        self.meter_topic = topics.site(self.id) + topics.SITE_METER
        self.peer_topic = topics.site(self.id) + topics.SITE_CHARGERS
        self.ignored = 0  # malformed meter or peer payloads, never trusted
        self.share_da = None
        self._meter = None  # (currents dA, arrival board ms, meter ts)
        # id -> (phases, draw dA, wants dA, offered dA, ts unix ms, arrival board ms, the
        # most it offered in the last _FOLLOW_MS dA, when it last offered that)
        self._peers = {}
        self._peak = (0, 0)  # the same of this charger's own offer
        self._fresh = False  # a reading not yet used
        self._changed_at = -1  # when this charger last raised or lowered its share
        self._cut = None  # the most it may offer while the site is above the limit (dA)
        self._cut_at = 0  # the reading it was computed from (arrival, board ms)
        self._cut_excess = 0  # and that reading's excess on this charger's phases (dA)
        self._rose = False  # the last change of the share was a rise, not yet drawn
        # How often the site went above the limit right after a rise of this charger's, less
        # the rises that settled since: a rise takes 1 / 2^n of the current that looks free.
        self._collided = 0
        self._used = None  # when the last reading used arrived (board ms)
        self._sent = None  # (draw, wants, offered) dA and phases in the last record, and when
        self._told = None  # the need in the record sent at the last reading (dA)
        self._sent_at = 0
        agent.ceiling.set_site(self.fallback_da, self.timeout_ms, self.fallback_da, 0)

    # -- uplink hooks
    def topics(self):
        return (self.meter_topic, self.peer_topic + "+")

    def on_message(self, topic, msg):
        if len(msg) > _MAX_PAYLOAD or json_fault(msg):  # not JSON, or parsed would cost heap
            self.ignored += 1
        elif topic == self.meter_topic:
            self._on_meter(msg)
        elif topic.startswith(self.peer_topic):
            peer = topic[len(self.peer_topic):]
            if peer != self.device_id:
                self._on_peer(peer, msg)

    def on_connect(self, publish):
        self._publish_record(publish)

    def service(self, publish, now):
        self._peak = _peak(self._peak, self.agent.control.offered_da, now)
        if self._fresh:
            self._fresh = False
            self._allocate(now)
            self._publish_record(publish)
            self._told = self._sent[1]
        elif self._moved(now):
            # Between readings too, so the peers subtract this charger's draw as the meter
            # sees it now, not as it was a reading ago (a vehicle that just started drawing
            # would otherwise count as household, and every share would fall for a second).
            self._publish_record(publish)

    def _moved(self, now):
        last = self._sent
        if last is None or elapsed(now, self._sent_at) < _RECORD_GAP_MS:
            return False
        return abs(self._my_draw() - last[0]) >= _DRAW_STEP_DA or \
            self._my_want() != last[1] or self.agent.control.offered_da != last[2] or \
            self.agent.phases.in_use != last[3]

    # -- input, checked before it is trusted
    def _on_meter(self, msg):
        try:
            m = json.loads(msg)
            cur = m["currents"]
            ts = m.get("ts")
        except (ValueError, TypeError, KeyError):
            cur = None
        top = self.fuse_da * 10  # a current ten times the fuse is not a reading
        if type(cur) is not list or len(cur) not in (1, 3) or len(cur) < max(self.phases):
            self.ignored += 1
            return
        da = []
        for v in cur:
            v = _number(v, top / 10)
            if v is None:
                self.ignored += 1
                return
            da.append(int(v * 10 + 0.5))
        self.on_reading(da, ts)

    def on_reading(self, da, ts=None):
        # A valid reading, as it comes on the meter's topic: per-phase dA in the site's phase
        # order, ts Unix ms or None. The charger's own mains meter hands its readings in
        # here (site_local.py).
        self._meter = (da, self.agent.board.now_ms(), ts)
        self._fresh = True

    def _on_peer(self, peer, msg):
        kept = self._peers.get(peer)
        if not msg:
            # A clean shutdown clears its retained record; anyone can send that too, so the
            # record goes stale now rather than away: a charger that left stops drawing (the
            # meter then refutes it), one that did not is heard again within a second.
            if kept is not None:
                self._peers[peer] = kept[:5] + (later(kept[5], -self.timeout_ms),) + kept[6:]
            return
        try:
            r = json.loads(msg)
            phases, ts = r["phases"], r["ts"]
            vals = [_number(r[k], 80) for k in ("drawA", "wantsA", "offeredA")]
        except (ValueError, TypeError, KeyError):
            phases = None
        ok = type(phases) is list and 0 < len(phases) <= 3 and type(ts) is int and \
            all(p in (1, 2, 3) for p in phases) and len(set(phases)) == len(phases) and \
            None not in vals
        now = self.agent.board.now_ms()
        if ok and kept is not None and ts < kept[4] and elapsed(now, kept[5]) < self.timeout_ms:
            ok = False  # older than the record kept from that sender: a replay, not news
            # (ts 0, a clock never set, comes after a real time only once that is stale)
        if not ok:
            self.ignored += 1
            return
        # Fresh from its arrival on this board's clock: the peers' clocks may differ, or be
        # unset (ts 0), so ts only orders one sender's records (docs/site.md).
        offered = int(vals[2] * 10)
        peak = _peak(kept[6:] if kept else None, offered, now)
        self._peers[peer] = (phases, int(vals[0] * 10), int(vals[1] * 10), offered, ts, now) + \
            peak

    # -- the share
    def _allocate(self, now):
        unix = self.agent.board.unix_ms()
        meter, arrived, ts = self._meter
        # Its need as its record at the last reading told the others (they have computed
        # with that since), not as it is this moment: every charger computes on the same
        # data, and a need that grew waits a reading, for the others to make room first.
        wants = self._my_want() if self._told is None else self._told
        me = (self.device_id, self._phases(), self._my_draw(), wants, True,
              self.agent.control.offered_da, self._peak[0])
        chargers = [me]
        gone = None
        for peer, c in self._peers.items():
            age = elapsed(now, c[5])
            if age >= 2 * self.timeout_ms:
                gone = peer  # stale for a whole timeout: forgotten (one per reading)
            elif max(c[0]) <= len(meter):  # else on a phase this site's meter lacks
                peak = c[6] if elapsed(now, c[7]) < _FOLLOW_MS else c[3]
                chargers.append((peer, c[0], c[1], c[2], age < self.timeout_ms, c[3], peak))
        if gone is not None:
            # Forgotten, it may still be alive and unheard, and forget this one too: the
            # next rise takes half of what looks free, as after a collision (below).
            del self._peers[gone]
            self._collided = max(self._collided, 1)
        clock = ts if type(ts) is int else (unix or 0)
        share = site_share.shares(self.fuse_da, self.margin_da, meter, chargers, clock)
        new = share.get(self.device_id, 0)
        # Above the limit, whatever the records say: this charger takes its part of the
        # excess off its draw, in proportion to its draw. The part is computed when the
        # excess appears (or grows) and holds while the vehicles follow (up to 5 s, IEC
        # 61851-1): the readings meanwhile show the chargers that have followed, not yet
        # those that will, and recomputing on them would take more off the quick ones. An
        # excess still there after that, the records did not explain (a record the meter
        # cannot refute claims a draw that is household): each charger takes all of it off.
        excess = -1
        for p in self.phases:
            excess = max(excess, meter[p - 1] - (self.fuse_da - self.margin_da))
        if excess <= 0:
            self._cut = None
        else:
            again = self._cut is not None and elapsed(arrived, self._cut_at) >= _FOLLOW_MS
            if self._cut is None or again or excess > self._cut_excess + _RAISE_STEP_DA:
                self._cut = site_share.cut(self.fuse_da - self.margin_da, meter, chargers,
                                           self.device_id, again)
                self._cut_at = arrived
                self._cut_excess = excess
        # Right after a rise of its own, an excess says someone took the same free current
        # (a charger this one does not hear, or the household at that moment): the next
        # rises take only half of what looks free (a quarter after two such, an eighth
        # after three), so chargers that cannot hear each other do not all take all of it
        # again and again; each rise that settles within the limit halves that less.
        if self._cut is not None:
            new = min(new, self._cut)
            if self._rose:
                self._collided = min(self._collided + 1, _BACKOFF_MAX)
                self._rose = False
        elif self._rose and me[2] >= self.share_da - _RAISE_STEP_DA:
            if self._collided:  # risen to its share, the site within the limit: settled
                self._collided -= 1
            self._rose = False
        old = self.share_da
        if self._used is None or elapsed(arrived, self._used) >= self.timeout_ms:
            # Back from the fallback (a boot, or a silent meter): the peers' records may be
            # stale, and each charger alone would take the whole site. This reading only
            # announces this charger (its record goes out now); the share rises from the
            # fallback on the next one, computed with every charger's fresh record. Nor does
            # it keep more of the fallback than the reading shows free.
            self.share_da = min(new, self.fallback_da,
                                self._room(meter, chargers, share, clock))
            self._changed_at = now
        else:
            if new > old:
                new = min(new, max(old, self._room(meter, chargers, share, clock)))
            # Lower at once; raise only on data newer than this charger's own last change,
            # so two chargers do not both take the same headroom from one stale reading,
            # and only by a step worth a change.
            if new < old or (new >= old + _RAISE_STEP_DA and
                             _after(arrived, self._changed_at)):
                self._rose = new > old
                self._changed_at = now
                self.share_da = new
        self._used = arrived
        self.agent.ceiling.set_site(self.share_da, self.timeout_ms, self.fallback_da, arrived)

    def _room(self, meter, chargers, share, clock):
        up = site_share.room(self.fuse_da - self.margin_da, meter, chargers, share,
                             self.device_id, clock)
        if self._collided:
            kept = min(chargers[0][2], chargers[0][5])  # chargers[0] is this charger
            # (but 6 A if that much is free: a rise below it cannot be offered at all)
            up = max(kept + ((up - kept) >> self._collided), min(up, MIN_CURRENT))
        return up

    def _phases(self):
        # The site phases this charger draws on now: its L1's alone while it uses one phase
        # (phases.py), so the others are not counted as its draw (nor their current as none
        # of the household's).
        return self.phases[:self.agent.phases.in_use]

    def _my_draw(self):
        c = self.agent.control
        return c.board.current_da if c.contactor_closed else 0

    def _my_want(self):
        # The most this charger could use under its other ceilings; 0 when not asking.
        c = self.agent.control
        if not c.session_active or c.paused or c.fault:
            return 0
        return self.agent.ceiling.limit_without(SITE, self.agent.board.now_ms())

    def _publish_record(self, publish):
        sent = (self._my_draw(), self._my_want(), self.agent.control.offered_da,
                self.agent.phases.in_use)
        body = {"ts": self.agent.board.unix_ms() or 0, "phases": self._phases(),
                "drawA": sent[0] / 10, "wantsA": sent[1] / 10, "offeredA": sent[2] / 10}
        publish(self.peer_topic + self.device_id, json.dumps(body).encode(), True)
        self._sent = sent
        self._sent_at = self.agent.board.now_ms()

    def read(self):
        # state.limits.site
        if self.share_da is None and self._meter is None:
            return None
        age = None
        if self._meter is not None:
            age = elapsed(self.agent.board.now_ms(), self._meter[1])
        return {"share": (self.share_da or 0) / 10, "meterAgeMs": age,
                "fallback": bool(self.agent.ceiling.site_stale), "ignored": self.ignored}


def _peak(last, offered, now):
    # (the most offered within the last _FOLLOW_MS, when it was last offered): what a
    # vehicle may still be following.
    if last is None or offered >= last[0] or elapsed(now, last[1]) >= _FOLLOW_MS:
        return (offered, now)
    return last


def _after(t, since):
    # Board time t is after `since` (-1: never).
    return since < 0 or (t != since and passed(t, since))
