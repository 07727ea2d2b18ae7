"""This replica's view of every charger: its last device read and whether it is connected,
fed by the broker (tools/cloud/bridge.py). Memory only, never shared: each replica has its
own, built from the broker's messages (retained ones at start) and, for a charger the broker
has said nothing about yet, from the database. Runs in the service's event loop.
"""
import time


class Entry:
    __slots__ = ("read", "pulled_at", "fresh_at", "online", "stamp", "heard_at")

    def __init__(self, read, pulled_at, fresh_at, online, stamp=None):
        self.read = read  # the last device read (None: only its availability is known)
        self.pulled_at = pulled_at  # Unix s: when the charger produced it, as far as we know
        self.fresh_at = fresh_at  # time.monotonic() when it arrived live; None: age unknown
        self.online = online
        self.stamp = stamp  # (meta.timestamp, meta.seq) of the report, to spot a replay
        self.heard_at = None  # time.monotonic() of its last message published live


class Cache:
    def __init__(self):
        self.entries = {}

    def get(self, device_id):
        return self.entries.get(device_id)

    def put_read(self, device_id, read, pulled_at, live, stamp=None):
        """A device read arrived: live (just published, or a reply) or retained (a broker's
        copy of unknown age). A retained copy of the report already held changes nothing."""
        e = self.entries.get(device_id)
        if e is None:
            self.entries[device_id] = Entry(read, pulled_at, time.monotonic() if live else None,
                                            None, stamp)
            return
        if not live and stamp is not None and stamp == e.stamp:
            return
        e.read, e.pulled_at, e.stamp = read, pulled_at, stamp
        e.fresh_at = time.monotonic() if live else None

    def put_online(self, device_id, online):
        """A report from before a disconnection is not fresh once the charger is back."""
        e = self.entries.get(device_id)
        if e is None:
            self.entries[device_id] = Entry(None, None, None, online)
        else:
            e.online = online
            if not online:
                e.fresh_at = None

    def heard(self, device_id):
        """The charger published something just now (bridge.py's stale sweep)."""
        e = self.entries.get(device_id)
        if e is None:
            e = self.entries[device_id] = Entry(None, None, None, None)
        e.heard_at = time.monotonic()

    def adopt(self, device_id, read, pulled_at, online):
        """What the database knows, for a charger the broker has not told this replica about."""
        e = self.entries.get(device_id)
        if e is None:
            e = self.entries[device_id] = Entry(read, pulled_at, None, online)
        elif e.read is None:
            e.read, e.pulled_at = read, pulled_at
        return e
