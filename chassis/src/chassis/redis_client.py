"""Outbound Redis: the one way every service builds its client.

Every connect and every reply is bounded by `timeout_seconds`, and a failed command is not retried
by the client: each caller decides what a Redis failure means (fall back to PostgreSQL, fail closed,
answer UNAVAILABLE), so it must hear of it at once. The client does not announce its library
(`CLIENT SETINFO`): a service's ACL user has no right to it, and servers before 7.2 lack it.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def create_redis(url: str, *, timeout_seconds: float, decode_responses: bool = False) -> Redis:
    """A lazily connecting client: nothing is dialled until the first command."""
    client: Redis = Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
        decode_responses=decode_responses,
        driver_info=None,
    )
    return client
