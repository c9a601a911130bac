"""argon2id password hashing on a bounded pool of worker threads, so a hash never blocks the event
loop and a burst of logins cannot hold more than `max_in_flight` hashes (each `memory_cost_kib`)
in memory at once: beyond `max_queued` waiting requests, the next one is refused at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import VerificationError
from prometheus_client import Counter, Gauge

from chassis.errors import Unavailable

T = TypeVar("T")

HASHES_IN_FLIGHT = Gauge(
    "user_password_hashes_in_flight", "argon2 hashes or verifications running now."
)
HASHES_QUEUED = Gauge("user_password_hashes_queued", "Requests waiting for a hashing slot.")
HASHES_REFUSED = Counter(
    "user_password_hashes_refused_total",
    "Requests refused at once because every hashing slot and queue place was taken.",
)
BUSY = "too many sign-ins in progress, retry shortly"


@dataclass(frozen=True, slots=True)
class Verification:
    """Outcome of checking a password: whether it matched and whether its hash is outdated."""

    matches: bool
    needs_rehash: bool = False


class PasswordHashing:
    """Hashes and verifies passwords with argon2id at the configured cost, `max_in_flight` at a
    time; up to `max_queued` more callers wait for a slot, and any further one gets UNAVAILABLE."""

    def __init__(
        self,
        *,
        time_cost: int,
        memory_cost_kib: int,
        parallelism: int,
        max_in_flight: int = 2,
        max_queued: int = 8,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._executor = ThreadPoolExecutor(max_in_flight, thread_name_prefix="argon2")
        self._slots = asyncio.Semaphore(max_in_flight)
        self._capacity = max_in_flight + max_queued
        self._admitted = 0
        # Hashed once, so that a login for an unknown email costs the same as a wrong password.
        self._dummy_hash = self._hasher.hash("dummy password for unknown accounts")

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> Verification:
        """Check `password` against a stored hash; `needs_rehash` when the cost settings changed."""
        return await self._run(self._verify, password_hash, password)

    async def burn_verification(self, password: str) -> None:
        """Spend the time of a real verification for an account that does not exist."""
        await self._run(self._verify, self._dummy_hash, password)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        if self._admitted >= self._capacity:
            HASHES_REFUSED.inc()
            raise Unavailable(BUSY)
        self._admitted += 1
        HASHES_QUEUED.inc()
        try:
            await self._slots.acquire()
        except BaseException:
            self._admitted -= 1
            raise
        finally:
            HASHES_QUEUED.dec()
        HASHES_IN_FLIGHT.inc()
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        # The slot is freed when the thread is done, not when the caller gives up (a deadline
        # cancels the RPC, but a running hash cannot be stopped and still holds its memory).
        future.add_done_callback(self._release)
        return await asyncio.shield(future)

    def _release(self, _: object) -> None:
        HASHES_IN_FLIGHT.dec()
        self._admitted -= 1
        self._slots.release()

    def _verify(self, password_hash: str, password: str) -> Verification:
        try:
            self._hasher.verify(password_hash, password)
        except VerificationError:
            return Verification(matches=False)
        return Verification(
            matches=True, needs_rehash=self._hasher.check_needs_rehash(password_hash)
        )
