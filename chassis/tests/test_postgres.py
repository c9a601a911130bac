"""Postgres plumbing against the real server: database creation, migrations under a lock,
the lazy pool and its readiness check."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import pytest

from chassis.errors import Unavailable
from chassis.migrations import MIGRATION_LOCK_KEY
from chassis.postgres import (
    check,
    create_pool,
    database_url,
    ensure_database,
    head_revision,
    migrate,
    unavailable_on_outage,
)
from chassis.testing.proxy import TcpProxy

MIGRATIONS = Path(__file__).with_name("sample_migrations")


def test_database_url_replaces_the_path_and_keeps_the_rest() -> None:
    assert (
        database_url("postgresql://app:pw@db.internal:6543/postgres?sslmode=require", "orders")
        == "postgresql://app:pw@db.internal:6543/orders?sslmode=require"
    )
    assert database_url("postgresql://postgres@127.0.0.1:5432", "users") == (
        "postgresql://postgres@127.0.0.1:5432/users"
    )


async def wait_for_lock_waiters(conn: asyncpg.Connection, expected: int) -> None:
    for _ in range(600):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
        )
        if waiting >= expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {waiting} migrators waited on the migration lock")


async def migrate_in_subprocess(url: str) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import asyncio, pathlib, sys; from chassis.postgres import migrate; "
        "asyncio.run(migrate(sys.argv[1], pathlib.Path(sys.argv[2])))",
        url,
        str(MIGRATIONS),
    )
    return await asyncio.wait_for(process.wait(), 60)


@pytest.mark.slow
async def test_concurrent_migrations_all_succeed_and_apply_each_revision_once(
    create_database,
) -> None:
    url = await create_database("migrate_race")
    gate = await asyncpg.connect(url, timeout=10)
    # Hold the migration lock so every migrator is provably queued on it before any runs.
    await gate.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    migrators = asyncio.gather(
        migrate_in_subprocess(url),
        migrate_in_subprocess(url),
        migrate(url, MIGRATIONS),
        migrate(url, MIGRATIONS),  # same process: queued behind the previous call
    )
    try:
        await wait_for_lock_waiters(gate, 3)
    finally:
        await gate.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        await gate.close()
    exit_codes = await migrators
    assert exit_codes[:2] == [0, 0]
    conn = await asyncpg.connect(url, timeout=10)
    try:
        ledger = await conn.fetch("SELECT revision FROM ledger ORDER BY revision")
        assert [row["revision"] for row in ledger] == ["0001", "0002"]
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0002"
    finally:
        await conn.close()
    await migrate(url, MIGRATIONS)  # already at head: nothing runs again
    conn = await asyncpg.connect(url, timeout=10)
    try:
        assert await conn.fetchval("SELECT count(*) FROM ledger") == 2
    finally:
        await conn.close()


def _scripts(folder: Path, *revisions: tuple[str, str]) -> Path:
    """Revision scripts in `folder/versions`: (revision, down_revision line's value) each."""
    (folder / "versions").mkdir(parents=True)
    for k, (revision, down) in enumerate(revisions):
        (folder / "versions" / f"{k:04}_r.py").write_text(
            f'"""A revision."""\n\nrevision = "{revision}"\ndown_revision = {down}\n'
        )
    return folder


def test_the_head_of_one_chain_is_read_from_the_scripts_and_anything_else_is_left_to_alembic(
    tmp_path: Path,
) -> None:
    assert head_revision(MIGRATIONS) == "0002"
    chain = _scripts(tmp_path / "chain", ("b", '"a"'), ("a", "None"), ("c", "'b'"))
    assert head_revision(chain) == "c"
    branched = _scripts(tmp_path / "branch", ("a", "None"), ("b", '"a"'), ("c", '"a"'))
    assert head_revision(branched) is None
    merged = _scripts(tmp_path / "merge", ("a", "None"), ("b", "None"), ("c", '("a", "b")'))
    assert head_revision(merged) is None
    dangling = _scripts(tmp_path / "dangling", ("b", '"a"'))
    assert head_revision(dangling) is None
    looped = _scripts(tmp_path / "loop", ("a", "None"), ("b", '"c"'), ("c", '"b"'))
    assert head_revision(looped) is None
    computed = _scripts(tmp_path / "computed", ("a", "None"), ("b", "PREVIOUS"))
    assert head_revision(computed) is None
    assert head_revision(_scripts(tmp_path / "empty")) is None


async def _migrate_reporting_alembic(url: str) -> bool:
    """Migrate in a process of its own; True when that process loaded Alembic."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import asyncio, pathlib, sys; from chassis.postgres import migrate; "
        "asyncio.run(migrate(sys.argv[1], pathlib.Path(sys.argv[2]))); "
        "print('alembic' in sys.modules)",
        url,
        str(MIGRATIONS),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    return out.decode().strip().splitlines()[-1] == "True"


@pytest.mark.slow
async def test_a_database_at_head_is_left_alone_without_loading_alembic(create_database) -> None:
    url = await create_database("migrate_at_head")
    assert await _migrate_reporting_alembic(url)  # a new database: Alembic migrates it
    assert not await _migrate_reporting_alembic(url)  # at head: a replica's every restart
    conn = await asyncpg.connect(url, timeout=10)
    try:
        # One revision behind (as after deploying a release with a new revision): Alembic runs.
        await conn.execute("DELETE FROM ledger WHERE revision = '0002'")
        await conn.execute("UPDATE alembic_version SET version_num = '0001'")
        assert await _migrate_reporting_alembic(url)
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0002"
        assert [r["revision"] for r in await conn.fetch("SELECT revision FROM ledger")] == [
            "0001",
            "0002",
        ]
    finally:
        await conn.close()


@pytest.mark.slow
async def test_ensure_database_is_safe_when_replicas_race(postgres_url: str, run_id: str) -> None:
    name = f"t_{run_id}_ensure_race"
    try:
        await asyncio.gather(*(ensure_database(postgres_url, name) for _ in range(4)))
        await ensure_database(postgres_url, name)
        conn = await asyncpg.connect(database_url(postgres_url, name), timeout=10)
        assert await conn.fetchval("SELECT current_database()") == name
        await conn.close()
    finally:
        admin = await asyncpg.connect(database_url(postgres_url, "postgres"), timeout=10)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_pool_connects_lazily_and_check_passes_on_a_live_database(create_database) -> None:
    pool = await create_pool(await create_database("pool"), max_size=2)
    try:
        assert pool.get_size() == 0
        await check(pool)
        assert pool.get_size() == 1
    finally:
        await pool.close()


async def test_check_fails_promptly_when_the_server_is_unreachable() -> None:
    pool = await create_pool("postgresql://postgres@127.0.0.1:1/nowhere")
    try:
        with pytest.raises((OSError, TimeoutError)):
            await check(pool, timeout_s=2)
    finally:
        await pool.close()


async def test_a_transaction_left_open_is_rolled_back_before_the_connection_is_reused(
    create_database,
) -> None:
    # max_size 1: the next acquire gets the very connection that was released mid-transaction.
    pool = await create_pool(await create_database("pool_reset"), max_size=1)
    try:
        await pool.execute("CREATE TABLE marks (n int)")
        leaked = await pool.acquire()
        await leaked.execute("BEGIN")
        await leaked.execute("INSERT INTO marks VALUES (1)")
        await pool.release(leaked)
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM marks") == 0
    finally:
        await pool.close()


class Accounts:
    """A store with a read and a write, guarded the way services guard theirs."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @unavailable_on_outage("the test database", idempotent=True)
    async def count(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM accounts"))

    @unavailable_on_outage("the test database")
    async def open_account(self) -> None:
        await self._pool.execute("INSERT INTO accounts DEFAULT VALUES")


async def test_a_read_whose_connection_died_unnoticed_runs_once_more_and_a_write_does_not(
    create_database,
) -> None:
    """A pooled connection the server forgot without a word is found out by its next statement.
    A read runs again on a fresh connection; a write whose outcome the client cannot know fails
    (UNAVAILABLE) rather than risk landing twice. Readiness is a read."""
    url = await create_database("forgotten")
    async with TcpProxy.in_front_of(url) as proxy:
        pool = await create_pool(proxy.url(url), max_size=1)
        accounts = Accounts(pool)
        try:
            await pool.execute("CREATE TABLE accounts (id serial)")
            await accounts.open_account()

            await proxy.forget_connections()
            assert await accounts.count() == 1

            await proxy.forget_connections()
            with pytest.raises(Unavailable):
                await accounts.open_account()
            assert await accounts.count() == 1  # (the proxy never passed it on)

            await proxy.forget_connections()
            await check(pool)
        finally:
            pool.terminate()
