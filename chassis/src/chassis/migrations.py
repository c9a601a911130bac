"""The body of every service's Alembic `env.py`: run the revisions on an asyncpg engine inside one
transaction that first takes an advisory lock, so concurrent migrators apply each revision once."""

from __future__ import annotations

import asyncio

from alembic import context, op
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.util import await_only

# Advisory locks are scoped to one database, so one fixed key serialises that database's migrators.
MIGRATION_LOCK_KEY = 0x6368617373697300  # "chassis\0"
LOCK_TIMEOUT_S = 120


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy async URL for an asyncpg-style `postgresql://` URL."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('@')[-1]}")


def execute_script(sql: str) -> None:
    """Run a multi-statement SQL script (e.g. `chassis.messaging.OUTBOX_DDL`) inside a revision.

    `op.execute()` goes through a prepared statement, which takes one command only; asyncpg's
    `execute()` without arguments uses the simple query protocol, which takes a whole script, and
    runs on the revision's connection, so in its transaction.
    """
    driver_connection = op.get_bind().connection.driver_connection
    if driver_connection is None:
        raise RuntimeError("execute_script needs an online migration (a live connection)")
    await_only(driver_connection.execute(sql))


def _url() -> str:
    url = context.config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get(
        "url"
    )
    if not url:
        raise RuntimeError("no database URL: call chassis.postgres.migrate() or pass -x url=...")
    return str(url)


def _run_locked(connection: Connection) -> None:
    context.configure(connection=connection, transaction_per_migration=False)
    with context.begin_transaction():
        connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'"))
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def _run_online(url: str) -> None:
    engine = create_async_engine(
        sqlalchemy_url(url), poolclass=pool.NullPool, connect_args={"timeout": 10}
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_locked)
    finally:
        await engine.dispose()


def run_env() -> None:
    """Entry point for `migrations/env.py`."""
    if context.is_offline_mode():
        context.configure(url=sqlalchemy_url(_url()), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(_url()))
