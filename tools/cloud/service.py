"""One replica of the cloud service: its parts wired together, started and stopped with the
HTTP app (docs/cloud.md, "What is where"). Nothing here outlives the process but what the
database holds: the cache, the pending requests and the leases are this replica's alone.
Runs in the service's event loop.
"""
import base64
import contextlib
import os

from tools.cloud import app as api
from tools.cloud.bridge import STALE_S, Bridge
from tools.cloud.cache import Cache
from tools.cloud.keys import Keys
from tools.cloud.sender import BACKOFF_FIRST_S, TIMEOUT_S, Sender
from tools.cloud.store import Store
from tools.cloud.tiers import CACHE_TTL_S, EXPEDITE_TTL_S, LIVE_WAIT_S, Tiers
from tools.paths import cpython_paths

cpython_paths()
import topics  # noqa: E402  (the firmware's topic prefix, defined once)


class Service:
    def __init__(self, db_url, broker, prefix=topics.PREFIX, client_id=None,
                 live_wait_s=LIVE_WAIT_S, write_wait_s=api.WRITE_WAIT_S,
                 ttl_s=CACHE_TTL_S, expedite_ttl_s=EXPEDITE_TTL_S,
                 webhook_timeout_s=TIMEOUT_S, backoff_first_s=BACKOFF_FIRST_S,
                 username=None, password=None, tls=None, stale_s=STALE_S):
        self.store = Store(db_url)
        self.cache = Cache()
        self.keys = Keys(self.store)
        self.sender = Sender(self.store, webhook_timeout_s, backoff_first_s)
        # A stable client id (the command line's: host and port) lets the broker keep this
        # replica's session, and the events published while it was away, for its next start.
        # Each replica needs its own.
        self.bridge = Bridge(broker, prefix, client_id or "evse-cloud-" + os.urandom(4).hex(),
                             self.store,
                             self.cache, self.sender.poke, username, password, tls, stale_s)
        self.tiers = Tiers(self.cache, self.bridge, self.store, live_wait_s, ttl_s,
                           expedite_ttl_s)
        self.write_wait_s = write_wait_s
        self.app = api.create(self, self.lifespan)

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        await self.bridge.start()
        await self.bridge.wait_connected(5)  # serve anyway: reads fall back meanwhile
        await self.sender.start()
        try:
            yield
        finally:
            await self.sender.stop()
            await self.bridge.stop()
            await self.store.close()

    @staticmethod
    def new_secret():
        """A webhook secret in Standard Webhooks' form: whsec_ and 24 random bytes."""
        return "whsec_" + base64.b64encode(os.urandom(24)).decode()
