# Site balancing (docs/site.md) on the charger itself: the site meter and the other chargers'
# records come in over MQTT, every charger computes the same shares (site_share.py) and
# hands its own to the control core as one ceiling. The control loop applies the fallback
# by itself when no fresh reading has come for meter_timeout_s (ceiling.py), so a
# stalled network can leave only the last share or the fallback, never more.
# An extra of the MQTT uplink (mqtt_uplink.py): on_message runs inside umqtt's callback and
# only stores.
import json
from micropython import const
from api_text import shallow
from control import elapsed, passed
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
        self._peers = {}  # id -> (phases, draw dA, wants dA, offered dA, ts unix ms)
        self._fresh = False  # a reading not yet used
        self._changed_at = -1  # when this charger last raised or lowered its share
        self._used = None  # when the last reading used arrived (board ms)
        self._sent = None  # (draw, wants, offered) dA and phases in the last record, and when
        self._sent_at = 0
        agent.ceiling.set_site(self.fallback_da, self.timeout_ms, self.fallback_da, 0)

    # -- uplink hooks
    def topics(self):
        return (self.meter_topic, self.peer_topic + "+")

    def on_message(self, topic, msg):
        if len(msg) > _MAX_PAYLOAD or not shallow(msg):  # parsed, either would cost heap
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
        if self._fresh:
            self._fresh = False
            self._allocate(now)
            self._publish_record(publish)
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
        self._meter = (da, self.agent.board.now_ms(), ts)
        self._fresh = True

    def _on_peer(self, peer, msg):
        if not msg:
            self._peers.pop(peer, None)  # a clean shutdown clears its retained record
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
        if not ok:
            self.ignored += 1
            return
        self._peers[peer] = (phases, int(vals[0] * 10), int(vals[1] * 10), int(vals[2] * 10), ts)

    # -- the share
    def _allocate(self, now):
        unix = self.agent.board.unix_ms()
        meter, arrived, ts = self._meter
        me = (self.device_id, self._phases(), self._my_draw(), self._my_want(), True)
        chargers = [me]
        for peer, (phases, draw, wants, offered, ts_peer) in self._peers.items():
            if max(phases) > len(meter):
                continue  # on a phase this site's meter does not have: not one of ours
            fresh = unix is not None and 0 <= unix - ts_peer < self.timeout_ms
            chargers.append((peer, phases, draw, wants, fresh))
        clock = ts if type(ts) is int else (unix or 0)
        share = site_share.shares(self.fuse_da, self.margin_da, meter, chargers, clock)
        new = share.get(self.device_id, 0)
        old = self.share_da
        if self._used is None or elapsed(arrived, self._used) >= self.timeout_ms:
            # Back from the fallback (a boot, or a silent meter): the peers' records may be
            # stale, and each charger alone would take the whole site. This reading only
            # announces this charger (its record goes out now); the share rises from the
            # fallback on the next one, computed with every charger's fresh record. Nor does
            # it keep more of the fallback than the reading shows free.
            self.share_da = min(new, self.fallback_da, self._room(meter, chargers, share))
            self._changed_at = now
        else:
            if new > old:
                new = min(new, max(old, self._room(meter, chargers, share)))
            # Lower at once; raise only on data newer than this charger's own last change,
            # so two chargers do not both take the same headroom from one stale reading,
            # and only by a step worth a change.
            if new < old or (new >= old + _RAISE_STEP_DA and
                             _after(arrived, self._changed_at)):
                self._changed_at = now
                self.share_da = new
        self._used = arrived
        self.agent.ceiling.set_site(self.share_da, self.timeout_ms, self.fallback_da, arrived)

    def _room(self, meter, chargers, share):
        return site_share.room(self.fuse_da - self.margin_da, meter, chargers, share,
                               self.device_id)

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


def _after(t, since):
    # Board time t is after `since` (-1: never).
    return since < 0 or (t != since and passed(t, since))
