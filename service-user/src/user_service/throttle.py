"""Login throttling: failed attempts per email counted in Redis, with a deadline on every call.

When Redis cannot answer in time the throttle fails closed (UNAVAILABLE): a login is never
allowed without the check that could have refused it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from chassis.errors import ResourceExhausted, Unavailable
from chassis.logging import get_logger

T = TypeVar("T")
log = get_logger(__name__)


class LoginThrottle:
    """Refuses logins for an email after `max_failures` failed attempts within `window_seconds`.

    Each attempt is counted *before* the password is checked (one atomic INCR), so a burst of
    parallel guesses cannot all slip past the limit while the first ones are still hashing. The
    counter expires `window_seconds` after the first attempt; the failure that reaches the limit
    restarts that expiry, so a throttled email stays refused for a full window. Refused attempts
    never touch the expiry, so they cannot extend the lock forever. A success clears the counter.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str,
        max_failures: int,
        window_seconds: int,
        timeout_seconds: float,
    ) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._max_failures = max_failures
        self._window = window_seconds
        self._timeout = timeout_seconds

    def _key(self, email: str) -> str:
        # Hashed so that addresses do not sit in Redis in clear text.
        digest = hashlib.sha256(email.encode("utf-8")).hexdigest()
        return f"{self._prefix}user:login-failures:{digest}"

    async def begin_attempt(self, email: str) -> None:
        """Count an attempt; raise ResourceExhausted when the email has no attempts left."""
        key = self._key(email)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self._window, nx=True)
            attempts, _ = await self._call(pipe.execute())
        if int(attempts) > self._max_failures:
            raise ResourceExhausted("too many failed logins for this email, try again later")

    async def attempt_failed(self, email: str) -> None:
        """The counted attempt failed: once the limit is reached, lock for a full window."""
        key = self._key(email)
        attempts = await self._call(self._redis.get(key))
        if attempts is not None and int(attempts) >= self._max_failures:
            await self._call(self._redis.expire(key, self._window))
            log.warning("login throttled after repeated failures", failures=int(attempts))

    async def attempt_succeeded(self, email: str) -> None:
        await self._call(self._redis.delete(self._key(email)))

    async def check(self) -> None:
        """Readiness: Redis answers a PING within the deadline."""
        await self._call(self._redis.ping())

    async def _call(self, pending: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await pending
        except (TimeoutError, RedisError, OSError) as error:
            log.error("redis unavailable for login throttling", error=repr(error))
            raise Unavailable("login is temporarily unavailable, try again shortly") from error
