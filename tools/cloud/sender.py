"""Webhook delivery from the outbox (docs/cloud.md, "Webhooks"): at least once, signed.

Rows are claimed with a lease (store.claim: FOR UPDATE SKIP LOCKED on PostgreSQL), so each
attempt is made by one sender however many replicas run, and a sender that dies mid-POST
leaves its rows to be claimed again once the lease runs out: the receiver then gets the same
webhook-id again (it drops duplicates by id, as Standard Webhooks asks). Each attempt is
signed anew with the `standardwebhooks` library (a fresh webhook-timestamp, which receivers
check against their clock) and sent with httpx, with the svix-* copies of the three headers
for receivers built on svix. A 2xx answer delivers; anything else is retried after 1 s, 2 s,
4 s ... up to an hour, MAX_ATTEMPTS in all. Runs in the service's event loop.
"""
import asyncio
import datetime
import logging
import random
import time

import httpx
from standardwebhooks.webhooks import Webhook

log = logging.getLogger("cloud.sender")
TIMEOUT_S = 30.0  # cloud.md: one attempt, whole, at most this
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 3600.0
MAX_ATTEMPTS = 20  # about 12 h of retrying at the schedule above
LEASE_MARGIN_S = 5.0
BATCH = 32
IDLE_S = 1.0  # look for due rows at least this often (another replica may have queued some)


def backoff_s(attempts, first_s=BACKOFF_FIRST_S):
    """The wait before attempt `attempts` + 1, with up to 10 % jitter."""
    base = min(first_s * 2 ** (attempts - 1), BACKOFF_MAX_S)
    return base * (1 + random.random() * 0.1)


def headers(secret, event_id, body, when=None):
    """The Standard Webhooks headers and their svix-* copies for one attempt."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    signature = Webhook(secret).sign(event_id, when, body)
    stamp = str(int(when.timestamp()))
    out = {"content-type": "application/json", "user-agent": "evse-cloud"}
    for prefix in ("webhook", "svix"):
        out.update({prefix + "-id": event_id, prefix + "-timestamp": stamp,
                    prefix + "-signature": signature})
    return out


class Sender:
    def __init__(self, store, timeout_s=TIMEOUT_S, backoff_first_s=BACKOFF_FIRST_S):
        self.store = store
        self.timeout_s = timeout_s
        self.backoff_first_s = backoff_first_s
        self.wake = asyncio.Event()
        self.task = None
        self.client = None
        self.attempts = 0

    async def start(self):
        self.client = httpx.AsyncClient(follow_redirects=False)
        self.task = asyncio.create_task(self._run())

    async def stop(self):
        if self.task:
            self.task.cancel()
        if self.client:
            await self.client.aclose()

    def poke(self):
        self.wake.set()

    async def _run(self):
        while True:
            try:
                rows = await self.store.claim(BATCH, time.time(),
                                              self.timeout_s + LEASE_MARGIN_S)
            except Exception:
                log.exception("claiming webhook deliveries failed")
                rows = []
            if rows:
                await asyncio.gather(*(self._deliver(r) for r in rows))
                continue
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), await self._idle_s())
            except asyncio.TimeoutError:
                pass

    async def _idle_s(self):
        try:
            due = await self.store.next_due()
        except Exception:
            return IDLE_S
        return IDLE_S if due is None else max(0.01, min(IDLE_S, due - time.time()))

    async def _deliver(self, row):
        self.attempts += 1
        try:
            r = await asyncio.wait_for(self.client.post(
                row.url, content=row.body.encode(),
                headers=headers(row.secret, row.event_id, row.body)), self.timeout_s)
            reason = None if 200 <= r.status_code < 300 else "HTTP %d" % r.status_code
        except asyncio.TimeoutError:
            reason = "no answer within %g s" % self.timeout_s
        except httpx.HTTPError as e:
            reason = "%s: %s" % (type(e).__name__, e)
        try:
            if reason is None:
                await self.store.delivered(row.id, time.time())
                return
            attempts = row.attempts + 1
            give_up = attempts >= MAX_ATTEMPTS
            await self.store.retry(row.id, attempts,
                                   time.time() + backoff_s(attempts, self.backoff_first_s),
                                   reason, give_up)
            log.info("webhook %s to %s: %s%s", row.event_id, row.url, reason,
                     "; given up" if give_up else "")
        except Exception:  # the lease runs out and the row is tried again
            log.exception("recording webhook delivery %s failed", row.id)
