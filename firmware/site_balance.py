# Site balancing (docs/site.md) on the charger itself: the site meter and the other chargers'
# records come in over MQTT, every charger computes the same shares (site_share.py) and
# hands its own to the control core as one ceiling. The control loop applies the fallback
# by itself when no fresh reading has come for meter_timeout_s (limits.Ceiling), so a
# stalled network can leave only the last share or the fallback, never more.
# An uplink extra (uplink.py): on_message runs inside umqtt's callback and only stores.
import json
from micropython import const
import site_share
import limits as lim

_MAX_PAYLOAD = const(512)  # a meter reading or a charger record is far smaller


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
        self.meter_topic = "site/%s/meter" % self.id
        self.peer_topic = "site/%s/chargers/" % self.id
        self.ignored = 0  # malformed meter or peer payloads, never trusted
        self.share_da = None
        self._meter = None  # (currents dA, arrival board ms, meter ts)
        self._peers = {}  # id -> (phases, draw dA, wants dA, offered dA, ts unix ms)
        self._fresh = False  # a reading not yet used
        self._changed_at = -1  # when this charger last raised or lowered its share
        agent.ceiling.set_site(self.fallback_da, self.timeout_ms, self.fallback_da, 0)

    # -- uplink hooks
    def topics(self):
        return (self.meter_topic, self.peer_topic + "+")

    def on_message(self, topic, msg):
        if len(msg) > _MAX_PAYLOAD:
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
            all(p in (1, 2, 3) for p in phases) and None not in vals
        if not ok:
            self.ignored += 1
            return
        self._peers[peer] = (phases, int(vals[0] * 10), int(vals[1] * 10), int(vals[2] * 10), ts)

    # -- the share
    def _allocate(self, now):
        unix = self.agent.board.unix_ms()
        me = (self.device_id, self.phases, self._my_draw(), self._my_want(), True)
        chargers = [me]
        for peer, (phases, draw, wants, offered, ts) in self._peers.items():
            fresh = unix is not None and 0 <= unix - ts < self.timeout_ms
            chargers.append((peer, phases, draw, wants, fresh))
        meter, arrived, ts = self._meter
        clock = ts if type(ts) is int else (unix or 0)
        share = site_share.shares(self.fuse_da, self.margin_da, meter, chargers, clock)
        new = share.get(self.device_id, 0)
        old = self.share_da
        # Lower at once; raise only on data newer than this charger's own last change, so
        # two chargers do not both take the same headroom from one stale reading.
        if old is None or new < old or (new > old and _after(arrived, self._changed_at)):
            if new != old:
                self._changed_at = now
            self.share_da = new
        self.agent.ceiling.set_site(self.share_da, self.timeout_ms, self.fallback_da, arrived)

    def _my_draw(self):
        c = self.agent.control
        return c.board.current_da if c.contactor_closed else 0

    def _my_want(self):
        # The most this charger could use under its other ceilings; 0 when not asking.
        c = self.agent.control
        if not c.session_active or c.paused or c.fault:
            return 0
        return self.agent.ceiling.limit_without(lim.SITE, self.agent.board.now_ms())

    def _publish_record(self, publish):
        c = self.agent.control
        body = {"ts": self.agent.board.unix_ms() or 0, "phases": self.phases,
                "drawA": self._my_draw() / 10, "wantsA": self._my_want() / 10,
                "offeredA": c.offered_da / 10}
        publish(self.peer_topic + self.device_id, json.dumps(body).encode(), True)

    def read(self):
        # state.limits.site
        if self.share_da is None and self._meter is None:
            return None
        age = None
        if self._meter is not None:
            age = (self.agent.board.now_ms() - self._meter[1]) & 0x3FFFFFFF
        return {"share": (self.share_da or 0) / 10, "meterAgeMs": age,
                "fallback": bool(self.agent.ceiling.site_stale), "ignored": self.ignored}


def _after(t, since):
    # Board time t is after `since` (-1: never).
    return since < 0 or 0 < ((t - since) & 0x3FFFFFFF) < 0x20000000
