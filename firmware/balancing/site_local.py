# Site balancing on the charger's own mains meter (docs/site.md, docs/meters.md): the worker
# hands each fresh reading to the SiteBalancer and runs it, so the share and the control
# loop's fallback hold the fuse with WiFi or the broker down, or no network configured at
# all. The MQTT uplink, where there is one, only carries messages: the other chargers'
# records in; this charger's record and its meter's reading out (site/{siteId}/meter: the
# site's other chargers balance on it as on any meter). The two threads meet in two
# mailboxes under one lock, held only to store or take (the unix port has no GIL). The
# site's meter topic is not subscribed: this charger's own meter is the site's.
import json
import _thread
from micropython import const

_INBOX = const(16)  # peer records waiting for the worker; more are dropped and counted


class LocalSite:
    def __init__(self, site, meter):
        self.site = site  # site_balance.SiteBalancer: the worker's alone
        self.meter = meter  # meter_poll.Meter at the supply
        self._lock = _thread.allocate_lock()
        self._inbox = []  # (topic, payload) the uplink received, for the worker
        self._dropped = 0  # ... and those the full inbox refused
        self._outbox = {}  # topic -> (payload, retain, qos): the latest, for the uplink
        self._retained = {}  # topic -> payload: the retained ones, again on a reconnect
        self._fed = None  # board ms of the last reading handed over

    # -- the worker (an agent duty)
    def duty(self, now):
        m = self.meter
        if m.fresh(now) and m.at_ms != self._fed:
            self._fed = m.at_ms
            da = [m.current_da[p] for p in range(m.phases)]
            ts = self.site.agent.board.unix_ms()
            self.site.on_reading(da, ts)
            body = {"currents": [v / 10 for v in da]}
            if ts is not None:
                body["ts"] = ts
            self._post(self.site.meter_topic, json.dumps(body).encode(), False, 0)
        with self._lock:
            inbox, self._inbox = self._inbox, []
            self.site.ignored += self._dropped
            self._dropped = 0
        for topic, msg in inbox:
            self.site.on_message(topic, msg)
        self.site.service(self._post, now)

    def _post(self, topic, payload, retain, qos=1):
        with self._lock:
            self._outbox[topic] = (payload, retain, qos)
            if retain:
                self._retained[topic] = payload

    # -- the uplink (an extra of mqtt_uplink.py, or of runner.Lockstep on the bench)
    def topics(self):
        return (self.site.peer_topic + "+",)

    def on_message(self, topic, msg):
        if not topic.startswith(self.site.peer_topic):
            return  # the site's meter topic: this charger's meter is the site's
        with self._lock:
            if len(self._inbox) < _INBOX:
                self._inbox.append((topic, msg))
            else:
                self._dropped += 1

    def on_connect(self, publish):
        with self._lock:
            again = list(self._retained.items())
        for topic, payload in again:
            publish(topic, payload, True)

    def service(self, publish, now):
        with self._lock:
            out, self._outbox = self._outbox, {}
        for topic, (payload, retain, qos) in out.items():
            publish(topic, payload, retain, qos)
