"""The cloud's database on PostgreSQL (issue 26, item 1; docs/deployment.md): Debian's server,
started by the test in a directory of its own (tools/bench/postgres.py), the same migrations
building the same schema as on SQLite, the same store rules, outbox claims that never
overlap however many replicas claim at once (FOR UPDATE SKIP LOCKED), and what the service
counts as "the database is away" (store.unavailable), within its bounded waits."""
import asyncio
import signal
import subprocess
import sys
import time

from sqlalchemy import text

from test_cloud_store import each_fact_once, migrations_are_the_schema
from tools.cloud import cli, store
from tools.cloud.bridge import Bridge
from tools.cloud.cache import Cache
from tools.cloud.schema import api_keys, deliveries, webhooks
from tools.paths import ROOT


def test_the_migrations_and_the_store_rules_on_postgres(pg):
    migrations_are_the_schema(store.url_of(pg.create_db("schema")))
    each_fact_once(store.url_of(pg.create_db("facts")))


def test_replicas_starting_together_migrate_once(pg_url):
    """Four replicas run the migrations at the same moment (`migrate` is what `serve` does
    first): none fails, the schema is whole."""
    procs = [subprocess.Popen([sys.executable, "-m", "tools.cloud", "migrate", "--db", pg_url],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    migrations_are_the_schema(store.url_of(pg_url))


def test_replicas_starting_together_with_one_key_make_it_once(pg_url):
    """`serve --api-key K` on four replicas at once: one adds K, the others find it."""
    url = store.url_of(pg_url)
    store.migrate(url)

    async def job():
        stores = [store.Store(url) for _ in range(4)]
        try:
            return await asyncio.gather(*(cli.ensure_key(s, "the-same-key-0123456789")
                                          for s in stores), return_exceptions=True)
        finally:
            for s in stores:
                await s.close()
    ids = asyncio.run(job())
    assert len(set(ids)) == 1 and str(ids[0]).startswith("key_"), ids


def test_concurrent_claims_never_overlap(pg_url):
    """16 senders (4 replicas' engines, 4 tasks each) claim 400 due deliveries in batches of
    8 at once: every row is claimed exactly once."""
    url = store.url_of(pg_url)
    store.migrate(url)

    async def job():
        stores = [store.Store(url) for _ in range(4)]
        try:
            async with stores[0].begin() as conn:
                await conn.execute(api_keys.insert().values(
                    id="k", name="", hash="h", all_devices=True, created_at=0))
                await conn.execute(webhooks.insert().values(
                    id="w", key_id="k", url="http://x/", events=[], secret="s", created_at=0))
                await conn.execute(deliveries.insert(), [
                    {"webhook_id": "w", "event_id": "evt_%d" % i, "body": "{}", "attempts": 0,
                     "next_at": 0} for i in range(400)])
            claimed = []

            async def sender(s):
                while True:
                    rows = await s.claim(8, time.time(), 60)
                    if not rows:
                        return
                    claimed.extend(r.event_id for r in rows)
                    await asyncio.sleep(0)
            await asyncio.gather(*(sender(s) for s in stores for _ in range(4)))
            return claimed
        finally:
            for s in stores:
                await s.close()

    claimed = asyncio.run(job())
    assert len(claimed) == 400 and len(set(claimed)) == 400


def _attempt(s, sql):
    async def go():
        try:
            async with s.begin() as conn:
                await conn.execute(text(sql))
        except Exception as e:  # what the service would see
            return e
        return None
    return go()


def test_what_counts_as_the_database_away(pg, pg_url):
    """A wrong query is a bug, not an outage; a server that is down, crashed mid-query, or
    hangs (SIGSTOP) is an outage, reported within store.CONNECT_S, never a hang."""
    url = store.url_of(pg_url)
    store.migrate(url)

    async def job():
        s = store.Store(url)
        out = {"syntax": await _attempt(s, "SELEC 1"),
               "constraint": await _attempt(s, "INSERT INTO api_keys VALUES "
                                               "('a', '', 'h', true, 0, NULL), "
                                               "('b', '', 'h', true, 0, NULL)")}
        slow = asyncio.ensure_future(_attempt(s, "SELECT pg_sleep(10)"))
        await asyncio.sleep(0.5)
        pg.kill()  # a crash in the middle of a query
        out["cut"] = await slow
        t0 = time.monotonic()
        out["down"] = await _attempt(s, "SELECT 1")
        out["down_s"] = time.monotonic() - t0
        await s.close()
        pg.start()
        s = store.Store(url)
        out["back"] = await _attempt(s, "SELECT 1")
        pg.proc.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing
        try:
            t0 = time.monotonic()
            fresh = store.Store(url)
            out["hung"] = await _attempt(fresh, "SELECT 1")
            out["hung_s"] = time.monotonic() - t0
            await fresh.close()
        finally:
            pg.proc.send_signal(signal.SIGCONT)
        await s.close()
        return out

    out = asyncio.run(job())
    assert out["syntax"] is not None and not store.unavailable(out["syntax"])
    assert out["constraint"] is not None and not store.unavailable(out["constraint"])
    for case in ("cut", "down", "hung"):
        assert out[case] is not None and store.unavailable(out[case]), (case, repr(out[case]))
    assert out["down_s"] < 1 and out["back"] is None
    assert store.CONNECT_S - 0.5 < out["hung_s"] < store.CONNECT_S + 2


def test_a_state_row_another_replica_is_writing_is_left_to_it(pg_url):
    """Replica A is in the middle of a batch holding charger x's row; replica B's batch with
    x and y writes y at once and leaves x to A (the same report, or one of the same moment),
    instead of waiting for A's whole batch."""
    url = store.url_of(pg_url)
    store.migrate(url)

    async def job():
        a, b = store.Store(url), store.Store(url)
        try:
            async with a.begin() as conn:
                await a.save_states(conn, {"x": ({"v": 0}, 1.0), "y": ({"v": 0}, 1.0)})
            async with a.begin() as held:
                await a.save_states(held, {"x": ({"v": 1}, 2.0)})
                t0 = time.monotonic()
                async with b.begin() as conn:
                    await asyncio.wait_for(b.save_states(
                        conn, {"x": ({"v": 1}, 2.0), "y": ({"v": 1}, 2.0)}), 3)
                took = time.monotonic() - t0
            async with a.engine.connect() as conn:
                rows = dict((await conn.execute(text(
                    "SELECT id, pulled_at FROM devices ORDER BY id"))).all())
            return took, rows
        finally:
            await a.close()
            await b.close()

    took, rows = asyncio.run(job())
    assert took < 1 and rows == {"x": 2.0, "y": 2.0}


def test_crossing_batches_of_two_replicas_do_not_deadlock(pg_url):
    """Replica A's batch has x's report and y coming online; B's has x's and y's reports and
    x coming online. A has taken its first row when B commits; then A goes on. The online
    changes wait on row locks in charger order; if a report took its row first (out of that
    order) A would hold x and wait for y while B held y and waited for x: a deadlock, one
    batch aborted by PostgreSQL a second later."""
    url = store.url_of(pg_url)
    store.migrate(url)

    async def job():
        a, b = store.Store(url), store.Store(url)
        first_done, go_on = asyncio.Event(), asyncio.Event()

        def pausing(method):
            async def call(*args):
                out = await method(*args)
                if not first_done.is_set():
                    first_done.set()
                    await go_on.wait()
                return out
            return call

        a.save_states, a.set_online = pausing(a.save_states), pausing(a.set_online)
        bridges = [Bridge("127.0.0.1:1", "ev-charger", name, s, Cache())
                   for name, s in (("a", a), ("b", b))]
        try:
            async with a.begin() as conn:
                await b.save_states(conn, {"x": ({"v": 0}, 1.0), "y": ({"v": 0}, 1.0)})
            in_a = asyncio.create_task(bridges[0].commit(
                {"x": ({"v": 1}, 2.0)}, [("online", "y", True, 2.0)]))
            await first_done.wait()
            in_b = asyncio.create_task(bridges[1].commit(
                {"x": ({"v": 1}, 2.0), "y": ({"v": 1}, 2.0)}, [("online", "x", True, 2.0)]))
            await asyncio.sleep(0.5)  # B has taken what it can and waits, or is done
            go_on.set()
            out = await asyncio.gather(in_a, in_b, return_exceptions=True)
            async with a.engine.connect() as conn:
                rows = (await conn.execute(text(
                    "SELECT id, online FROM devices ORDER BY id"))).all()
            return out, [tuple(r) for r in rows]
        finally:
            await a.close()
            await b.close()

    out, rows = asyncio.run(job())
    assert out == [None, None], out
    assert rows == [("x", True), ("y", True)]  # (y's report: left to A, which takes it too)
