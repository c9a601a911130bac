"""pytest plugin (entry point `chassis`): session fixtures that give each test run its own
databases, Redis key prefix, exchange and queue prefix on the servers named by POSTGRES_URL,
REDIS_URL and AMQP_URL (testcontainers when a variable is unset and a Docker engine answers), and
accounts of least privilege for the services of a platform run on them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
import pytest
import pytest_asyncio

from chassis.postgres import database_url, ensure_database
from chassis.testing.redis_keys import delete_keys

if TYPE_CHECKING:
    from chassis.testing.accounts import RunAccounts

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
CLEANUP_TIMEOUT_S = 30.0

CreateDatabase = Callable[[str], Awaitable[str]]


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:  # no SDK, no socket, no daemon: all mean "no Docker here"
        return False
    return True


@contextlib.contextmanager
def _server_url(
    variable: str, default: str, container: Callable[[], contextlib.AbstractContextManager[str]]
) -> Iterator[str]:
    if variable in os.environ:
        yield os.environ[variable]
    elif _docker_answers():
        try:
            started = container()
            url = started.__enter__()
        except Exception as error:  # no image and no registry, a refused start, ...
            pytest.exit(
                f"{variable} is not set and testcontainers could not start a server for it "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                f"set {variable} to a running server (e.g. {default})",
                returncode=3,
            )
        try:
            yield url
        finally:
            started.__exit__(None, None, None)
    else:
        yield default


@contextlib.contextmanager
def _postgres_container() -> Iterator[str]:
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as pg:
        yield f"postgresql://{pg.username}:{pg.password}@{pg.get_container_host_ip()}:{pg.get_exposed_port(5432)}"


@contextlib.contextmanager
def _redis_container() -> Iterator[str]:
    from testcontainers.redis import RedisContainer

    with RedisContainer("redis:7-alpine") as redis:
        yield f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0"


@contextlib.contextmanager
def _rabbitmq_container() -> Iterator[str]:
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13-alpine") as rabbit:
        host, port = rabbit.get_container_host_ip(), rabbit.get_exposed_port(5672)
        yield f"amqp://guest:guest@{host}:{port}/"


# The suite runs on several xdist workers, each with services and pools of its own, against one
# PostgreSQL server (100 connections by default) that the whole machine shares: a service a test
# starts keeps a pool of 2 unless the test says otherwise (a pool only queues requests beyond it),
# and closes a connection idle for 5 s (a worker's session fixtures outlive the tests using them).
TEST_POSTGRES_POOL = {"POSTGRES_POOL_MAX": "2", "POSTGRES_POOL_IDLE_SECONDS": "5"}


def pytest_configure(config: pytest.Config) -> None:
    for variable, value in TEST_POSTGRES_POOL.items():
        os.environ.setdefault(variable, value)


@pytest.fixture(scope="session")
def run_id() -> str:
    """Unique per test session; every name a run creates on shared servers contains it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"{uuid.uuid4().hex[:10]}{worker}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The Postgres server URL (no database)."""
    with _server_url("POSTGRES_URL", DEFAULT_POSTGRES_URL, _postgres_container) as url:
        yield url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def create_database(postgres_url: str, run_id: str) -> AsyncIterator[CreateDatabase]:
    """Factory: `await create_database("users")` -> URL of a fresh database `t_<run_id>_users`,
    dropped (even with connections still open) at the end of the session."""
    created: list[str] = []

    async def create(name: str) -> str:
        database = re.sub(r"[^a-z0-9_]", "_", f"t_{run_id}_{name}".lower())
        await ensure_database(postgres_url, database)
        created.append(database)
        return database_url(postgres_url, database)

    yield create
    if not created:
        return
    conn = await asyncpg.connect(database_url(postgres_url, "postgres"), timeout=10)
    try:
        for database in created:
            await conn.execute(
                f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', timeout=CLEANUP_TIMEOUT_S
            )
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with _server_url("REDIS_URL", DEFAULT_REDIS_URL, _redis_container) as url:
        yield url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis_key_prefix(redis_url: str, run_id: str) -> AsyncIterator[str]:
    """`test:<run_id>:`; every key under it is deleted at the end of the session."""
    prefix = f"test:{run_id}:"
    yield prefix
    await delete_keys(redis_url, prefix)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    with _server_url("AMQP_URL", DEFAULT_AMQP_URL, _rabbitmq_container) as url:
        yield url


@dataclass
class AmqpIsolation:
    """Names a test run uses on the shared broker (EVENTS_EXCHANGE and QUEUE_PREFIX settings)."""

    exchange: str
    queue_prefix: str
    extra_queues: list[str] = field(default_factory=list)

    def queue(self, name: str) -> str:
        """`queue_prefix + name`, remembered so it is deleted at the end even if unlisted."""
        full = f"{self.queue_prefix}{name}"
        self.extra_queues.append(full)
        return full


def _rabbitmqctl_names(kind: str, prefix: str) -> list[str]:
    """The broker's queues or exchanges named with `prefix`, when rabbitmqctl may run here."""
    if shutil.which("rabbitmqctl") is None:
        return []
    try:
        listing = subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["rabbitmqctl", "-q", f"list_{kind}", "name"],  # noqa: S607 - broker CLI on PATH
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listing.splitlines() if line.strip().startswith(prefix)]


async def _delete_amqp_names(amqp_url: str, queues: list[str], exchanges: list[str]) -> None:
    """Delete every name it can; one the broker refuses (e.g. an exclusive queue another
    connection still holds) must not leave the rest behind. Raises afterwards naming the refused."""
    import aio_pika

    refused: list[str] = []
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        for kind, names in (("queue", queues), ("exchange", exchanges)):
            for name in names:
                # A refusal closes the channel, so each name gets its own.
                channel = await connection.channel()
                try:
                    if kind == "queue":
                        await channel.queue_delete(name, timeout=10)
                    else:
                        await channel.exchange_delete(name, timeout=10)
                except (aio_pika.exceptions.AMQPError, TimeoutError) as error:
                    refused.append(f"{kind} {name}: {error}")
                finally:
                    if not channel.is_closed:
                        await channel.close()
    if refused:
        raise RuntimeError("test run left on the broker: " + "; ".join(refused))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def amqp_isolation(amqp_url: str, run_id: str) -> AsyncIterator[AmqpIsolation]:
    """Exchange `test.<run_id>.events` and queue prefix `test.<run_id>.`; at the end the exchange,
    its `.dlx`, and every queue or exchange named with the prefix are deleted."""
    isolation = AmqpIsolation(exchange=f"test.{run_id}.events", queue_prefix=f"test.{run_id}.")
    yield isolation
    prefix = isolation.queue_prefix
    # Both listings at once: each rabbitmqctl call starts an Erlang VM (seconds).
    listed_queues, listed_exchanges = await asyncio.gather(
        asyncio.to_thread(_rabbitmqctl_names, "queues", prefix),
        asyncio.to_thread(_rabbitmqctl_names, "exchanges", prefix),
    )
    queues = sorted({*isolation.extra_queues, *listed_queues})
    exchanges = sorted({isolation.exchange, f"{isolation.exchange}.dlx", *listed_exchanges})
    await asyncio.wait_for(_delete_amqp_names(amqp_url, queues, exchanges), CLEANUP_TIMEOUT_S)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def service_accounts(
    postgres_url: str, redis_url: str, amqp_url: str, run_id: str
) -> AsyncIterator[RunAccounts]:
    """`await service_accounts.make(accounts_file, env, label)`: each service's accounts of least
    privilege for the platform `env` configures, named after the run (the broker's users through
    RABBITMQ_ADMIN_URL, else rabbitmqctl); removed at the end of the session, with the databases
    their roles own."""
    from chassis.testing.accounts import RunAccounts

    accounts = RunAccounts(run_id, postgres_url, redis_url, amqp_url)
    yield accounts
    await asyncio.wait_for(accounts.remove(), CLEANUP_TIMEOUT_S * 4)
