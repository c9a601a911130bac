"""PostgreSQL plumbing shared by services: database URLs, race-safe database creation, Alembic
migrations under an advisory lock, the asyncpg pool and its readiness check; every call bounded."""

from __future__ import annotations

import asyncio
import functools
import re
import threading
from collections.abc import Callable, Coroutine
from importlib import resources
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from chassis.errors import Unavailable
from chassis.logging import get_logger

CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0
MIGRATE_TIMEOUT_S = 300.0
_log = get_logger("chassis.postgres")
# Alembic keeps its `context` in module globals, so one process runs one upgrade at a time;
# the advisory lock in chassis.migrations serialises migrators across processes.
_ALEMBIC_LOCK = threading.Lock()


# The database being down, restarting or too slow: the caller's UNAVAILABLE (retryable), never an
# INTERNAL error.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # A pooled connection the server terminated while it sat idle (PostgreSQL stopping sends
    # FATAL 57P01 to every session): asyncpg reports the broken protocol state on its next use
    # ("cannot switch to state ..."), then drops it; the pool opens a new one for the retry.
    asyncpg.exceptions.InternalClientError,
)
P = ParamSpec("P")
R = TypeVar("R")


AsyncMethod = Callable[P, Coroutine[Any, Any, R]]


def connection_lost(error: BaseException) -> bool:
    """Whether `error` says the connection (or the server behind it) went away, rather than a
    statement ran out of time: a fresh connection may succeed at once, where a timeout has spent
    the caller's deadline already."""
    return isinstance(error, OUTAGE_ERRORS) and not isinstance(error, TimeoutError)


def unavailable_on_outage(
    what: str, *, idempotent: bool = False
) -> Callable[[AsyncMethod[P, R]], AsyncMethod[P, R]]:
    """Decorate a store method so that a database outage raises `Unavailable(f"{what} is
    unavailable")` instead of leaking a driver error (which would be INTERNAL).

    With `idempotent` (a read, or a write that lands harmlessly twice), a method whose connection
    was lost under it runs once more: the pool has dropped that connection and hands out a fresh
    one. This covers a pooled connection that died unnoticed (the pool already replaces one it
    knows is closed, with no round trip); a server really down fails the second attempt at once.
    """

    def decorate(method: AsyncMethod[P, R]) -> AsyncMethod[P, R]:
        @functools.wraps(method)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await method(*args, **kwargs)
            except OUTAGE_ERRORS as error:
                if not (idempotent and connection_lost(error)):
                    raise Unavailable(f"{what} is unavailable") from error
                _log.info("postgres_call_retried", error=f"{type(error).__name__}: {error}")
            try:
                return await method(*args, **kwargs)
            except (*OUTAGE_ERRORS, asyncpg.InterfaceError) as error:
                # InterfaceError: the method runs on one connection (a transaction's), not on
                # the pool, and that connection stays closed.
                raise Unavailable(f"{what} is unavailable") from error

        return guarded

    return decorate


def database_url(server_url: str, database: str) -> str:
    """The URL of `database` on the server named by `server_url` (whose own path is ignored)."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DatabaseMissing(RuntimeError):
    """The service's database does not exist and its role may not create it."""


async def ensure_database(server_url: str, database: str) -> None:
    """Make sure `database` exists. A role that can open it needs no other right (the bootstrap
    creates each service's database owned by the service's role, which may not CREATEDB);
    otherwise it is created, and several replicas starting at once are fine."""
    try:
        conn = await asyncpg.connect(database_url(server_url, database), timeout=CONNECT_TIMEOUT_S)
    except asyncpg.InvalidCatalogNameError:
        await _create_database(server_url, database)
    else:
        await conn.close(timeout=CONNECT_TIMEOUT_S)


async def _create_database(server_url: str, database: str) -> None:
    conn = await asyncpg.connect(database_url(server_url, "postgres"), timeout=CONNECT_TIMEOUT_S)
    try:
        await conn.execute(
            f"CREATE DATABASE {_quote_identifier(database)}", timeout=COMMAND_TIMEOUT_S
        )
        _log.info("database_created", database=database)
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        # Another replica won the race.
        _log.info("database_created_concurrently", database=database)
    except asyncpg.InsufficientPrivilegeError as error:
        raise DatabaseMissing(
            f"database {database!r} does not exist and this role may not create it: "
            "run platform-bootstrap (deploy/accounts/README.md)"
        ) from error
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT_S)


def package_migrations(package: str) -> Path:
    """The Alembic scripts shipped inside `package` (its `migrations/` folder), so that a wheel or
    an image without the source tree migrates exactly like a checkout does."""
    return Path(str(resources.files(package).joinpath("migrations")))


# What a revision script says of itself (`revision = "0002_x"`, `down_revision = "0001_y"` or
# None), read without importing Alembic.
_REVISION = re.compile(r"""^revision(?:\s*:[^=\n]+)?\s*=\s*["']([\w.-]+)["']\s*$""", re.M)
_DOWN_REVISION = re.compile(
    r"""^down_revision(?:\s*:[^=\n]+)?\s*=\s*(?:None|["']([\w.-]+)["'])\s*$""", re.M
)


def head_revision(migrations_dir: Path) -> str | None:
    """The head of the revisions in `migrations_dir/versions` when they form one chain, read
    from the scripts' text; None for anything else (a branch, a merge, a script whose revision
    lines are not plain strings), which is left to Alembic."""
    parents: dict[str, str | None] = {}
    for script in sorted((migrations_dir / "versions").glob("*.py")):
        text = script.read_text(encoding="utf-8")
        revisions, downs = _REVISION.findall(text), _DOWN_REVISION.findall(text)
        if len(revisions) != 1 or len(downs) != 1 or revisions[0] in parents:
            return None
        parents[revisions[0]] = downs[0] or None
    children = {parent: child for child, parent in parents.items() if parent is not None}
    heads = [revision for revision in parents if revision not in children]
    if len(heads) != 1 or len(children) != len(parents) - 1:
        return None
    # One chain: from the head down to a root, every revision exactly once.
    chain: list[str] = []
    revision: str | None = heads[0]
    while revision is not None:
        if revision not in parents or revision in chain:
            return None
        chain.append(revision)
        revision = parents[revision]
    return heads[0] if len(chain) == len(parents) else None


async def _at_head(url: str, head: str) -> bool:
    """True when the database's `alembic_version` holds exactly `head` (committed: an upgrade
    runs in one transaction with its version row); False on anything else, Alembic decides."""
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    try:
        rows = await conn.fetch(
            "SELECT version_num FROM alembic_version", timeout=CONNECT_TIMEOUT_S
        )
    except (asyncpg.PostgresError, TimeoutError):
        return False  # no version table yet (a new database), or not ours to read
    finally:
        await conn.close(timeout=CONNECT_TIMEOUT_S)
    return [row["version_num"] for row in rows] == [head]


async def migrate(url: str, migrations_dir: Path, *, timeout_s: float = MIGRATE_TIMEOUT_S) -> None:
    """Alembic `upgrade head` for the database at `url`, serialised with concurrent migrators.

    A database already at the head of a one-chain history is left alone without loading Alembic
    and SQLAlchemy: that cost a replica about a second of CPU on every start, restarts and
    rollouts included, when there is almost never anything to apply."""
    head = head_revision(migrations_dir)
    if head is not None and await _at_head(url, head):
        _log.info("migrations_up_to_date", migrations=str(migrations_dir), head=head)
        return
    # Imported here: Alembic and SQLAlchemy are only needed by the process that migrates.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["url"] = url

    def upgrade() -> None:
        with _ALEMBIC_LOCK:
            command.upgrade(config, "head")

    await asyncio.wait_for(asyncio.to_thread(upgrade), timeout_s)
    _log.info("migrations_applied", migrations=str(migrations_dir))


async def create_pool(
    url: str,
    *,
    max_size: int = 10,
    command_timeout: float = COMMAND_TIMEOUT_S,
    idle_seconds: float = 300.0,
) -> asyncpg.Pool:
    """An asyncpg pool that opens connections on demand (min_size 0), so creating it never blocks
    on an unreachable server; each query is bounded by `command_timeout`, and a connection left
    idle for `idle_seconds` is closed (a burst's connections go back to the server after it).

    Pooled connections carry no session state (LISTEN, advisory locks and SET live on dedicated
    connections), so releasing one skips asyncpg's reset query (`RESET ALL; UNLISTEN *; ...`), a
    round trip per release that cost about a sixth of a short RPC's CPU in service-user. asyncpg
    still rolls back a transaction left open before this hook runs, so none can leak.
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=command_timeout,
        max_inactive_connection_lifetime=idle_seconds,
        reset=_keep_session,
    )
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset hook: nothing beyond asyncpg's own rollback (see create_pool)."""


async def check(pool: asyncpg.Pool, *, timeout_s: float = 2.0) -> None:
    """Readiness: a connection can be had and answers SELECT 1 within `timeout_s` seconds (a
    pooled connection found lost is replaced and asked once more, within the same time)."""

    async def select_one() -> None:
        async with pool.acquire(timeout=timeout_s) as conn:
            await conn.fetchval("SELECT 1", timeout=timeout_s)

    async with asyncio.timeout(timeout_s):
        try:
            await select_one()
        except OUTAGE_ERRORS as error:
            if not connection_lost(error):
                raise
            await select_one()
