"""Login and register throttling in Redis, with a deadline on every call.

`LoginThrottle` keys failures by email *and client*: the client that keeps failing for an email is
refused for that email, while the owner logging in from another client is not. An email attacked
from many clients gets growing delays (at most `max_delay_seconds` per attempt), never a lock.
`ClientRateLimit` bounds how many logins and registrations one client may start per window.
A refusal says when the caller may try again: the time left on the key that refused it (sent as
the standard `google.rpc.RetryInfo`).

When Redis cannot answer in time, login fails closed (UNAVAILABLE): a login is never allowed
without the check that could have refused it. Registration fails open: its per-client limit only
protects capacity, which the bounded hashing pool protects as well.

Counting (INCR) is never sent twice: a connection that broke under it leaves the count unknown,
and the request fails (UNAVAILABLE) rather than count an attempt twice. Clearing a pair (DEL) and
the readiness PING are idempotent and run once more on a fresh connection
(`chassis.redis_client.idempotent`). A connection Redis closed while idle (a Redis restart) is
replaced before anything is sent on it, so none of this fails once Redis is back.
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
from chassis.redis_client import idempotent

T = TypeVar("T")
log = get_logger(__name__)

# The first delay once an email crosses its failure threshold; each further failure doubles it.
FIRST_DELAY_SECONDS = 0.1

# Decrement a counter that is still there and positive; never create one (it may have expired).
_UNCOUNT = """
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
if value > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""


def _seconds_left(pttl_milliseconds: int, window_seconds: int) -> float:
    """Seconds until a key expires, from its PTTL; a key without one (never expected: every key
    is written with its expiry in the same transaction) counts as a whole window."""
    if pttl_milliseconds < 0:
        return float(window_seconds)
    return pttl_milliseconds / 1000


def _digest(*parts: str) -> str:
    # Hashed so that addresses (emails and client addresses) do not sit in Redis in clear text.
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


class _Deadlined:
    def __init__(self, redis: Redis, *, key_prefix: str, timeout_seconds: float) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._timeout = timeout_seconds

    async def _call(self, pending: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await pending
        except (TimeoutError, RedisError, OSError) as error:
            log.error("throttle_redis_unavailable", error=repr(error))
            raise Unavailable("login is temporarily unavailable, try again shortly") from error


class LoginThrottle(_Deadlined):
    """Failed logins per (email, client) and per email.

    Per (email, client): each attempt is counted *before* the password is checked (one atomic
    INCR), so a burst of parallel guesses gets `max_failures` tries, not one per request in flight.
    Beyond them the pair is refused (RESOURCE_EXHAUSTED, the right password included) until
    `window_seconds` after its last counted failure; a success clears the pair.

    Per email, all clients together: failures within `window_seconds`. From `delay_after_failures`
    on, every attempt for that email waits `FIRST_DELAY_SECONDS * 2^(failures - threshold)`, at most
    `max_delay_seconds`, before its password is checked: distributed guessing slows down, and the
    owner still gets in after at most that delay.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str,
        max_failures: int,
        window_seconds: int,
        delay_after_failures: int,
        max_delay_seconds: float,
        timeout_seconds: float,
    ) -> None:
        super().__init__(redis, key_prefix=key_prefix, timeout_seconds=timeout_seconds)
        self._max_failures = max_failures
        self._window = window_seconds
        self._delay_after = delay_after_failures
        self._max_delay = max_delay_seconds

    def _pair_key(self, email: str, client: str) -> str:
        return f"{self._prefix}user:login-failures:{_digest(email, client)}"

    def _email_key(self, email: str) -> str:
        return f"{self._prefix}user:login-failures-by-email:{_digest(email)}"

    def delay_for(self, email_failures: int) -> float:
        """Seconds an attempt waits when its email has had `email_failures` recent failures."""
        if email_failures < self._delay_after:
            return 0.0
        steps = min(email_failures - self._delay_after, 30)
        return float(min(FIRST_DELAY_SECONDS * 2**steps, self._max_delay))

    async def begin_attempt(self, email: str, client: str) -> float:
        """Count an attempt; raise ResourceExhausted (with the seconds until the pair's counter
        expires) when this client has no attempts left for this email, else return the delay to
        wait before checking the password."""
        pair = self._pair_key(email, client)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(pair)
            pipe.expire(pair, self._window, nx=True)
            pipe.pttl(pair)
            pipe.get(self._email_key(email))
            attempts, _, pttl, email_failures = await self._call(pipe.execute())
        if int(attempts) > self._max_failures:
            # A refused attempt never extends the pair's expiry: when it goes, the client may
            # try again.
            raise ResourceExhausted(
                "too many failed logins for this email, try again later",
                retry_after_seconds=_seconds_left(int(pttl), self._window),
            )
        return self.delay_for(int(email_failures or 0))

    async def attempt_failed(self, email: str, client: str) -> None:
        """The counted attempt failed: count it for the email, and once this client reached the
        limit, refuse the pair for a full window from now."""
        pair, by_email = self._pair_key(email, client), self._email_key(email)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(pair)
            pipe.incr(by_email)
            pipe.expire(by_email, self._window, nx=True)
            attempts, _, _ = await self._call(pipe.execute())
        if attempts is not None and int(attempts) >= self._max_failures:
            await self._call(self._redis.expire(pair, self._window))
            log.warning("login_throttled", scope="client", max_failures=self._max_failures)

    async def attempt_succeeded(self, email: str, client: str) -> None:
        pair = self._pair_key(email, client)
        await self._call(idempotent(lambda: self._redis.delete(pair)))

    async def attempt_abandoned(self, email: str, client: str) -> None:
        """The counted attempt never reached a verdict (the database or the hashing pool was
        unavailable): uncount it, so an outage never locks out the owner retrying meanwhile.
        Best effort: if Redis cannot take it either, the attempt stays counted."""
        try:
            await self._call(self._redis.eval(_UNCOUNT, 1, self._pair_key(email, client)))
        except Unavailable:
            log.warning("login_attempt_not_uncounted")

    async def check(self) -> None:
        """Readiness: Redis answers a PING within the deadline."""
        await self._call(idempotent(self._redis.ping))


class ClientRateLimit(_Deadlined):
    """At most `limit` requests of one action per client per `window_seconds` (fixed window)."""

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str,
        action: str,
        limit: int,
        window_seconds: int,
        timeout_seconds: float,
        fail_open: bool,
    ) -> None:
        super().__init__(redis, key_prefix=key_prefix, timeout_seconds=timeout_seconds)
        self._action = action
        self._limit = limit
        self._window = window_seconds
        self._fail_open = fail_open

    async def take(self, client: str) -> None:
        """Count one request from `client`; ResourceExhausted beyond the limit, saying how long
        until the window ends."""
        key = f"{self._prefix}user:client-rate:{self._action}:{_digest(client)}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, self._window, nx=True)
                pipe.pttl(key)
                count, _, pttl = await self._call(pipe.execute())
        except Unavailable:
            if self._fail_open:
                return
            raise
        if int(count) > self._limit:
            # The window is fixed: the next one starts when this key expires.
            raise ResourceExhausted(
                f"too many {self._action} requests from this client, try again later",
                retry_after_seconds=_seconds_left(int(pttl), self._window),
            )
