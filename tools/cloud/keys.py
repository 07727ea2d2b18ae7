"""API keys: made, hashed, checked, and what each may see (docs/cloud.md, "Keys").

A key is shown once, when it is made; the database keeps its SHA-256 (a key is 32 random
bytes, or an installer's own of at least 16 characters, so a fast hash is enough: there is
nothing to guess). A key sees every charger or a listed set; a charger it may not see is
answered exactly as one that does not exist. Lookups are cached for a few seconds per
replica, so a cached read costs no query; a revoked key stops working within that time.
Runs in the service's event loop.
"""
import hashlib
import secrets
import time

from tools.cloud.contract import ApiError, new_id
from tools.cloud.store import unavailable

PREFIX = "evk_"
MIN_LENGTH = 16  # an installer's own key, like the charger's http.token
CACHE_S = 2.0


def make():
    return PREFIX + secrets.token_urlsafe(32)


def digest(key):
    return hashlib.sha256(key.encode()).hexdigest()


def check_own(key):
    """An error message for a key given on a command line, or None if it will do."""
    if len(key) < MIN_LENGTH or not all(" " < ch <= "~" for ch in key):
        return "a key needs at least %d printable characters, no spaces" % MIN_LENGTH
    return None


async def add(store, name="", devices=None, key=None):
    """(key id, the key): a new key for every charger (devices None) or the listed ones."""
    key = key or make()
    key_id = new_id("key_")
    await store.add_key(digest(key), name, devices is None, devices or (), key_id)
    return key_id, key


class Caller:
    """Who is asking: a key's id and what it may see (scope None: every charger)."""

    def __init__(self, key_id, scope):
        self.key_id = key_id
        self.scope = scope

    def sees(self, device_id):
        return self.scope is None or device_id in self.scope


class Keys:
    def __init__(self, store):
        self.store = store
        self._cache = {}  # digest -> (Caller or None, fetched at)

    async def caller(self, authorization):
        """The Caller for an Authorization header, or ApiError 401."""
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError("UNAUTHORIZED", "an API key is required: Authorization: Bearer <key>")
        h = digest(key.strip())
        hit = self._cache.get(h)
        now = time.monotonic()
        if hit is None or now - hit[1] > CACHE_S:
            try:
                found = await self.store.key_by_hash(h)
            except Exception as e:
                # The database away: a key looked up before stays as it was (no revocation
                # can happen meanwhile either); an unknown one is answered 503 by the app.
                if hit is None or not unavailable(e):
                    raise
                found = None if hit[0] is None else (hit[0].key_id, hit[0].scope)
            if len(self._cache) > 10000:  # a flood of wrong keys must not grow it for ever
                self._cache.clear()
            hit = (Caller(*found) if found else None, now)
            self._cache[h] = hit
        if hit[0] is None:
            raise ApiError("UNAUTHORIZED", "this API key is not valid")
        return hit[0]
