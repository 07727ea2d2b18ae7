"""A read's freshness tier: cache, live or fallback (cloud.md, "Freshness tiers of a read").

- cache: the charger is connected and this replica got its last report live less than the
  TTL ago (15 min; 1 min with ?expedite=true).
- live: otherwise, if it is connected: ask it (a `read` request) and wait up to live_wait_s;
  concurrent live reads of one charger share one request.
- fallback: it is offline (or the service has lost its broker), or it did not answer in
  time: the last known read, sync.available false.
A charger known to be offline is always `fallback`, however young its last report: the
cloud does not claim freshness for a charger it cannot reach. A report the broker kept
(retained) is of unknown age, so the first read after the service starts goes live.
Runs in the service's event loop.
"""
import asyncio
import time

from tools.cloud import intake
from tools.cloud.contract import ApiError, iso, new_id

CACHE_TTL_S = 15 * 60
EXPEDITE_TTL_S = 60
LIVE_WAIT_S = 5.0


def not_found(device_id):
    return ApiError("DEVICE_NOT_FOUND", "no charger %s is known to this key" % device_id[:128])


class Tiers:
    def __init__(self, cache, bridge, store, live_wait_s=LIVE_WAIT_S, ttl_s=CACHE_TTL_S,
                 expedite_ttl_s=EXPEDITE_TTL_S):
        self.cache = cache
        self.bridge = bridge
        self.store = store
        self.live_wait_s = live_wait_s
        self.ttl_s = ttl_s
        self.expedite_ttl_s = expedite_ttl_s
        self._live = {}  # device id -> the task of its live read in flight

    async def entry(self, device_id):
        """This replica's entry for a charger with a known read, or ApiError 404."""
        e = self.cache.get(device_id)
        if e is None or e.read is None:
            row = await self.store.device(device_id)
            if row is not None and row.state is not None:
                e = self.cache.adopt(device_id, row.state, row.pulled_at, row.online)
        if e is None or e.read is None:
            raise not_found(device_id)
        return e

    def reachable(self, e):
        return bool(e.online) and self.bridge.connected

    async def read(self, device_id, expedite=False):
        """(device read as served, with metadata.source and sync)."""
        e = await self.entry(device_id)
        if not self.reachable(e):
            return present(e.read, "fallback", False, e.pulled_at)
        ttl = self.expedite_ttl_s if expedite else self.ttl_s
        if e.fresh_at is not None and time.monotonic() - e.fresh_at < ttl:
            return present(e.read, "cache", True, e.pulled_at)
        task = self._live.get(device_id)
        if task is None:
            task = self._live[device_id] = asyncio.ensure_future(self._ask(device_id))
            task.add_done_callback(lambda _: self._live.pop(device_id, None))
        got = await asyncio.shield(task)
        if got is not None:
            return present(got[0], "live", True, got[1])
        return present(e.read, "fallback", False, e.pulled_at)

    async def _ask(self, device_id):
        try:
            reply = await self.bridge.request(device_id, "read", {"requestId": new_id("req_")},
                                              self.live_wait_s)
        except ApiError:  # the broker went away meanwhile
            return None
        if reply is None or not reply[1]:
            return None
        read = intake.device_read(device_id, reply[2])
        if read is None:
            return None
        e = self.cache.get(device_id)  # the bridge put the reply there, with its time
        return read, e.pulled_at if e is not None and e.read is read else time.time()


def present(read, tier, available, pulled_at):
    """The read as the API serves it: the cloud's tier in metadata.source, the charger's own
    claim in metadata.deviceSource, and sync."""
    out = dict(read)
    meta = dict(read.get("metadata") or {})
    meta["deviceSource"] = meta.get("source")
    meta["source"] = tier
    out["metadata"] = meta
    out["sync"] = {"available": available, "lastPulledAt": iso(pulled_at)}
    return out
