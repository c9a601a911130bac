"""Outbound Redis: the one way every service builds its client, and the one rule for retrying.

Every connect and every reply is bounded by `timeout_seconds`. The client itself never sends a
command twice: after a command was written, a broken connection leaves its outcome unknown, and
only the caller knows whether sending it again is harmless. So:

- A pooled connection the server closed or reset while it sat idle (Redis restarted, a proxy or
  a firewall dropped it) is replaced *before* a command is written to it. The check reads the
  socket's state the event loop already holds: no round trip. A connection idle past
  `HEALTH_CHECK_SECONDS` is PINGed first (one round trip, only after that much idleness), and
  replaced, not failed, when the PING finds it dead (no FIN or RST ever reached us).
- `idempotent(call)` runs a command that may land twice without harm (a read, a SET of a value,
  a DEL, a script that is idempotent by design) and runs it once more, on a fresh connection,
  when its connection broke under it. Everything else fails at once, and the caller decides what
  a Redis failure means (fall back to PostgreSQL, fail closed, answer UNAVAILABLE).

A script run after a Redis restart meets NOSCRIPT (the server's script cache starts empty):
redis-py's `Script` (from `register_script`) loads it again and runs it, in the same call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from chassis.logging import get_logger

T = TypeVar("T")
# A connection idle this long is PINGed before its next command (see the module docstring).
HEALTH_CHECK_SECONDS = 30
# Connections one client opens at most; a command beyond them waits for one (up to the client's
# timeout) instead of failing at once, as redis-py's plain pool does past its default of 100.
MAX_CONNECTIONS = 64
_log = get_logger(__name__)


class _ReplacingDeadConnections(BlockingConnectionPool):
    """A bounded pool that hands out no connection its server already closed or reset."""

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        if connection.is_connected:
            if closed_by_peer(connection):
                await connection.disconnect(nowait=True)
            else:
                # A PING that finds it dead disconnects it: nothing else was sent on it, so
                # the command goes on the new connection made below.
                with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                    await connection.check_health()  # type: ignore[no-untyped-call]
        await super().ensure_connection(connection)


def closed_by_peer(connection: AbstractConnection) -> bool:
    """Whether the server's end of `connection` is gone: its FIN (end of stream) or RST (a
    connection error, which closes the transport) has reached this process. Reads only what the
    event loop already knows (redis-py keeps the stream pair in `_reader` / `_writer`)."""
    reader: Any = getattr(connection, "_reader", None)
    writer: Any = getattr(connection, "_writer", None)
    if reader is None or writer is None:
        return False
    return bool(reader.at_eof() or reader.exception() is not None or writer.is_closing())


def create_redis(
    url: str,
    *,
    timeout_seconds: float,
    decode_responses: bool = False,
    health_check_seconds: float = HEALTH_CHECK_SECONDS,
    max_connections: int = MAX_CONNECTIONS,
) -> Redis:
    """A lazily connecting client: nothing is dialled until the first command."""
    pool = _ReplacingDeadConnections.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        max_connections=max_connections,
        timeout=timeout_seconds,  # the wait for a free connection
        # Never re-sent by the client: see the module docstring.
        retry=Retry(NoBackoff(), 0),
        health_check_interval=health_check_seconds,
        decode_responses=decode_responses,
        # Redis Enterprise's maintenance notifications, which this platform does not use; left
        # on ("auto"), redis-py skips its own check for a connection with unread data.
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
        # The client does not announce its library (`CLIENT SETINFO`): a service's ACL user has
        # no right to it, and servers before 7.2 lack it.
        driver_info=None,
    )
    return Redis.from_pool(pool)


async def idempotent(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, and once more when the connection broke under it (the broken connection is
    dropped, so the second attempt has a fresh one). Only for a command whose second landing
    changes nothing: its first may have reached the server before the connection broke.

    A timeout is not retried (the deadline is spent, and the server is not answering), nor is a
    second broken connection (the server is really down: the caller's error stands)."""
    try:
        return await call()
    except RedisConnectionError as error:
        _log.info("redis_command_retried", error=f"{type(error).__name__}: {error}")
        return await call()
