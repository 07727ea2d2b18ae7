"""The cloud's database (tools/cloud/store.py): the migrations build exactly the tables the
queries are written against (schema.py), and the rules that let several replicas take in
the same messages: an action only moves forward, one charger cannot take another's action
id, `online` changes once however many replicas report it, an event is stored once."""
import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tools.cloud import schema, store


def run(url, job):
    async def go():
        s = store.Store(url)
        try:
            return await job(s)
        finally:
            await s.close()
    return asyncio.run(go())


def test_the_migrations_are_the_schema(tmp_path):
    migrations_are_the_schema(store.url_of(str(tmp_path / "c.db")))


def test_replicas_store_each_fact_once(tmp_path):
    each_fact_once(store.url_of(str(tmp_path / "c.db")))


# Each check on a database URL: SQLite here, PostgreSQL in test_cloud_postgres.py.
def migrations_are_the_schema(url):
    store.migrate(url)

    async def diff(s):
        async with s.engine.connect() as conn:
            return await conn.run_sync(lambda c: compare_metadata(
                MigrationContext.configure(c), schema.metadata))
    assert run(url, diff) == []
    store.migrate(url)  # again: nothing to do, nothing lost


def each_fact_once(url):
    store.migrate(url)
    act = {"id": "act_1", "deviceId": "a", "deviceType": "ev_charger", "command": "idle",
           "parameters": None, "state": "acknowledged", "createdAt": None}
    evt = {"id": "evt_1", "type": "push.completed", "timestamp": None, "data": {}}

    async def job(s):
        async with s.begin() as conn:
            assert await s.save_action(conn, "a", act)
            assert await s.save_action(conn, "a", dict(act, state="completed"))
            assert await s.save_action(conn, "a", dict(act, state="acknowledged"))  # late
            assert not await s.save_action(conn, "b", dict(act, deviceId="b", state="failed"))
            wins = [await s.set_online(conn, "a", True, 1.0) for _ in range(3)]
            first_offline = await s.set_online(conn, "never", False, 1.0)
            added = [await s.add_event(conn, "a", evt, 1.0) for _ in range(2)]
        return (await s.action("act_1", None), await s.action("act_1", frozenset(["b"])),
                wins, first_offline, added)

    body, hidden, wins, first_offline, added = run(url, job)
    assert body["state"] == "completed" and body["deviceId"] == "a"
    assert hidden is None  # a key that sees only b does not see a's action
    assert wins == [True, False, False] and first_offline is False
    assert added == [True, False]
