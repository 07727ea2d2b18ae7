"""alembic's entry: runs the migrations on the service's database (SQLite or PostgreSQL),
through the same async driver the service uses. Called by tools/cloud/store.py's migrate().

Replicas starting together all migrate: on PostgreSQL one at a time, under a transaction-level
advisory lock taken before alembic reads the version, so the others find the work done
(without it, two create the same tables and one fails). SQLite's single writer serialises
them already."""
import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

LOCK_KEY = 0x65767365  # "evse": the migrations' advisory lock, held until the commit


def run(connection):
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(%d)" % LOCK_KEY))
    context.configure(connection=connection, target_metadata=None,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def main():
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url"))
    async with engine.connect() as conn:
        await conn.run_sync(run)
        await conn.commit()
    await engine.dispose()


asyncio.run(main())
