"""The database: opening it, migrating it, and every query the service makes (docs/cloud.md).

SQLAlchemy 2 async over SQLite (aiosqlite, the embedded default) or PostgreSQL (asyncpg, for
several replicas). Every write is idempotent or conditional, so several replicas taking in
the same broker messages store each fact once: events and outbox rows are inserted "if not
there", an action only moves forward, a charger's online flag changes in one conditional
UPDATE whose winner alone emits device.connected / device.disconnected. Runs in the
service's event loop; migrate() is synchronous and runs before it.
"""
import asyncio
import os
import sqlite3
import time

from alembic import command
from alembic.config import Config
from sqlalchemy import and_, bindparam, event, func, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import create_async_engine

from tools.cloud.schema import actions, api_keys, deliveries, devices, events, key_devices, webhooks

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
TERMINAL = ("completed", "failed", "cancelled")
# PostgreSQL's bounds (docs/deployment.md, "Failover"): a connection that does not open in
# CONNECT_S, a query that does not end in QUERY_S, a pool with no free connection in
# POOL_WAIT_S are errors, so no request waits on a dead database for longer.
CONNECT_S = 5.0
QUERY_S = 10.0
POOL_WAIT_S = 5.0
# SQLSTATE classes that say "the database, not the query": connection exceptions (08),
# operator intervention (57P: shutdown, crash, starting up), insufficient resources (53),
# and the transaction conflicts that succeed when tried again (40001, 40P01: deadlock).
_TRANSIENT_STATES = ("08", "57P", "53", "40001", "40P01")


def unavailable(exc):
    """True if `exc` (from any query) says the database cannot serve now (down, restarting,
    a cut connection, a deadlock to retry), not that the query is wrong: worth trying again."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (OSError, asyncio.TimeoutError, sa_exc.TimeoutError)):
            return True  # sa_exc.TimeoutError: no pooled connection free within POOL_WAIT_S
        if getattr(exc, "connection_invalidated", False):
            return True
        state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if isinstance(state, str) and state.startswith(_TRANSIENT_STATES):
            return True
        if type(exc).__name__ in ("ConnectionDoesNotExistError", "InterfaceError",
                                  "CannotConnectNowError", "PostgresConnectionError"):
            return True
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return False


def url_of(text):
    """The async SQLAlchemy URL for a --db argument: a file path, sqlite:///..., or
    postgresql://..."""
    if "://" not in text:
        return "sqlite+aiosqlite:///" + os.path.abspath(text)
    scheme, rest = text.split("://", 1)
    return {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
            "postgres": "postgresql+asyncpg"}.get(scheme, scheme) + "://" + rest


def migrate(url):
    """alembic upgrade head: the migrations are the schema. Synchronous (outside a loop)."""
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


def engine_for(url):
    if url.startswith("sqlite"):
        # One writer at a time (SQLite's rule): a short wait rather than "database is locked",
        # and WAL so that readers never wait for it.
        engine = create_async_engine(url, connect_args={"timeout": 10})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(conn, _):
            cur = conn.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
                cur.execute("PRAGMA " + pragma)
            cur.close()
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True,
                               pool_timeout=POOL_WAIT_S, connect_args={
                                   "timeout": CONNECT_S, "command_timeout": QUERY_S})


def _insert(conn, table):
    """INSERT with the dialect's ON CONFLICT clauses."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


class Store:
    def __init__(self, url):
        self.engine = engine_for(url)

    async def close(self):
        await self.engine.dispose()

    def begin(self):
        return self.engine.begin()

    # -- keys
    async def add_key(self, key_hash, name, all_devices, device_ids, key_id):
        async with self.begin() as conn:
            await conn.execute(api_keys.insert().values(
                id=key_id, name=name, hash=key_hash, all_devices=all_devices,
                created_at=time.time()))
            for d in sorted(set(device_ids)):
                await conn.execute(key_devices.insert().values(key_id=key_id, device_id=d))

    async def key_by_hash(self, key_hash):
        """(key id, None for every charger or a frozenset of ids), or None."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(api_keys.c.id, api_keys.c.all_devices).where(
                api_keys.c.hash == key_hash, api_keys.c.revoked_at.is_(None)))).first()
            if row is None:
                return None
            if row.all_devices:
                return row.id, None
            ids = (await conn.execute(select(key_devices.c.device_id).where(
                key_devices.c.key_id == row.id))).scalars()
            return row.id, frozenset(ids)

    async def keys(self):
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at))).all()
            scope = {}
            for r in (await conn.execute(select(key_devices))).all():
                scope.setdefault(r.key_id, []).append(r.device_id)
        return [dict(r._mapping, hash=None, devices=scope.get(r.id, [])) for r in rows]

    async def revoke_key(self, key_id):
        async with self.begin() as conn:
            r = await conn.execute(update(api_keys).where(
                api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(
                revoked_at=time.time()))
            return r.rowcount == 1

    # -- chargers
    async def device(self, device_id):
        async with self.engine.connect() as conn:
            return (await conn.execute(select(devices).where(devices.c.id == device_id))).first()

    async def device_list(self, scope, after, limit):
        """Chargers with a state, in id order, after `after`, visible to `scope`."""
        q = select(devices.c.id, devices.c.online, devices.c.pulled_at, devices.c.state).where(
            devices.c.state.is_not(None), devices.c.id > (after or "")).order_by(
            devices.c.id).limit(limit)
        if scope is not None:
            q = q.where(devices.c.id.in_(sorted(scope)))
        async with self.engine.connect() as conn:
            return (await conn.execute(q)).all()

    async def online_ids(self):
        """The ids of the chargers the database says are online."""
        async with self.engine.connect() as conn:
            return (await conn.execute(select(devices.c.id).where(devices.c.online))).scalars(
                ).all()

    async def save_states(self, conn, reads):
        """reads: {device id: (device read, pulled_at)}; the newer read wins. A charger's row
        that another replica is writing at this moment (it took in the same reports) is left
        to it (FOR UPDATE SKIP LOCKED): replicas waiting on each other's row locks queued
        up behind one another's whole batches (docs/cloud.md, "How it scales"). A row this
        transaction holds already is written. SQLite has one writer and no row locks: every
        row is written."""
        ids = sorted(reads)
        if not ids:
            return
        now = time.time()
        known = set((await conn.execute(select(devices.c.id).where(
            devices.c.id.in_(ids)))).scalars())
        for device_id in ids:
            if device_id not in known:  # first sight: inserted (or updated if it just was)
                read, pulled_at = reads[device_id]
                stmt = _insert(conn, devices).values(id=device_id, state=read,
                                                     pulled_at=pulled_at, online=False,
                                                     first_seen_at=now)
                await conn.execute(stmt.on_conflict_do_update(
                    index_elements=[devices.c.id], set_={"state": read, "pulled_at": pulled_at},
                    where=or_(devices.c.pulled_at.is_(None), devices.c.pulled_at <= pulled_at)))
        free = (await conn.execute(select(devices.c.id).where(
            devices.c.id.in_(sorted(known))).order_by(devices.c.id).with_for_update(
            skip_locked=True))).scalars().all()
        if free:
            await conn.execute(update(devices).where(
                devices.c.id == bindparam("b_id"),
                or_(devices.c.pulled_at.is_(None), devices.c.pulled_at <= bindparam("b_at"))
            ).values(state=bindparam("b_state"), pulled_at=bindparam("b_at")),
                [{"b_id": d, "b_state": reads[d][0], "b_at": reads[d][1]} for d in free])

    async def set_online(self, conn, device_id, online, at):
        """True if this call changed the charger's online flag (exactly one caller wins). A
        charger first heard of as offline was never connected: no change."""
        await conn.execute(_insert(conn, devices).values(
            id=device_id, online=False, first_seen_at=at).on_conflict_do_nothing())
        r = await conn.execute(update(devices).where(
            devices.c.id == device_id, devices.c.online == (not online)).values(
            online=online, changed_at=at))
        return r.rowcount == 1

    # -- actions
    async def save_action(self, conn, device_id, body):
        """Insert, or move forward: a terminal state is never overwritten, nor replaced by
        acknowledged (a late reply after the completion event). An id another charger holds
        already is left alone: a charger cannot shadow another's action."""
        taken = (await conn.execute(select(actions.c.device_id).where(
            actions.c.id == body["id"], actions.c.device_id != device_id).limit(1))).first()
        if taken is not None:
            return False
        now = time.time()
        values = dict(device_id=device_id, id=body["id"], command=body["command"],
                      state=body["state"], body=body, updated_at=now)
        stmt = _insert(conn, actions).values(**values)
        await conn.execute(stmt.on_conflict_do_update(
            index_elements=[actions.c.device_id, actions.c.id],
            set_={"state": body["state"], "body": body, "updated_at": now},
            where=and_(actions.c.state == "acknowledged",
                       stmt.excluded.state != "acknowledged")))
        return True

    async def action(self, action_id, scope):
        q = select(actions.c.body).where(actions.c.id == action_id).order_by(
            actions.c.updated_at.desc()).limit(1)
        if scope is not None:
            q = q.where(actions.c.device_id.in_(sorted(scope)))
        async with self.engine.connect() as conn:
            return (await conn.execute(q)).scalar()

    async def action_row(self, conn, device_id, action_id):
        return (await conn.execute(select(actions.c.body).where(
            actions.c.device_id == device_id, actions.c.id == action_id))).scalar()

    # -- events and their outbox
    async def add_event(self, conn, device_id, evt, now):
        """True if the event is new (a repeated id is dropped: at-least-once upstream)."""
        r = await conn.execute(_insert(conn, events).values(
            device_id=device_id, id=evt["id"], type=evt["type"], body=evt,
            received_at=now).on_conflict_do_nothing())
        return r.rowcount == 1

    async def webhooks_for(self, conn, device_id, kind):
        """The endpoints that want `kind` and whose key may see the charger."""
        q = select(webhooks.c.id, webhooks.c.events, api_keys.c.all_devices,
                   api_keys.c.id.label("key_id")).join(
            api_keys, api_keys.c.id == webhooks.c.key_id).where(api_keys.c.revoked_at.is_(None))
        rows = (await conn.execute(q)).all()
        out = []
        for r in rows:
            if kind not in r.events:
                continue
            if not r.all_devices:
                seen = (await conn.execute(select(key_devices.c.device_id).where(
                    key_devices.c.key_id == r.key_id,
                    key_devices.c.device_id == device_id))).first()
                if seen is None:
                    continue
            out.append(r.id)
        return out

    async def enqueue(self, conn, webhook_ids, event_id, body, now):
        for wid in webhook_ids:
            await conn.execute(_insert(conn, deliveries).values(
                webhook_id=wid, event_id=event_id, body=body, attempts=0,
                next_at=now).on_conflict_do_nothing())

    async def claim(self, limit, now, lease_s):
        """Due deliveries, leased to this sender until now + lease_s. On PostgreSQL the rows
        are locked FOR UPDATE SKIP LOCKED, so replicas claim disjoint rows; SQLite has one
        writer at a time, which serialises the claim just the same."""
        due = and_(deliveries.c.delivered_at.is_(None), deliveries.c.gave_up_at.is_(None),
                   deliveries.c.next_at <= now,
                   or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < now))
        async with self.begin() as conn:
            ids = (await conn.execute(select(deliveries.c.id).where(due).order_by(
                deliveries.c.next_at).limit(limit).with_for_update(skip_locked=True))
                   ).scalars().all()
            if not ids:
                return []
            await conn.execute(update(deliveries).where(deliveries.c.id.in_(ids)).values(
                lease_until=now + lease_s))
            rows = (await conn.execute(select(
                deliveries.c.id, deliveries.c.event_id, deliveries.c.body, deliveries.c.attempts,
                webhooks.c.url, webhooks.c.secret).join(
                webhooks, webhooks.c.id == deliveries.c.webhook_id).where(
                deliveries.c.id.in_(ids)))).all()
        return rows

    async def delivered(self, delivery_id, now):
        async with self.begin() as conn:
            await conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(
                delivered_at=now, lease_until=None, attempts=deliveries.c.attempts + 1))

    async def retry(self, delivery_id, attempts, next_at, reason, give_up):
        async with self.begin() as conn:
            await conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(
                attempts=attempts, next_at=next_at, lease_until=None, last_error=reason[:500],
                gave_up_at=time.time() if give_up else None))

    async def next_due(self):
        """When the next undelivered row falls due (None: none waits)."""
        async with self.engine.connect() as conn:
            return (await conn.execute(select(func.min(deliveries.c.next_at)).where(
                deliveries.c.delivered_at.is_(None), deliveries.c.gave_up_at.is_(None)))).scalar()

    # -- webhook endpoints
    async def add_webhook(self, row):
        async with self.begin() as conn:
            await conn.execute(webhooks.insert().values(**row))

    async def webhook_list(self, key_id):
        async with self.engine.connect() as conn:
            return (await conn.execute(select(webhooks).where(
                webhooks.c.key_id == key_id).order_by(webhooks.c.created_at))).all()

    async def delete_webhook(self, key_id, webhook_id):
        async with self.begin() as conn:
            r = await conn.execute(webhooks.delete().where(
                webhooks.c.id == webhook_id, webhooks.c.key_id == key_id))
            return r.rowcount == 1
