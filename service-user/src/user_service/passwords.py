"""argon2id password hashing, run in worker threads so a hash never blocks the event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import VerificationError


@dataclass(frozen=True, slots=True)
class Verification:
    """Outcome of checking a password: whether it matched and whether its hash is outdated."""

    matches: bool
    needs_rehash: bool = False


class PasswordHashing:
    """Hashes and verifies passwords with argon2id at the configured cost."""

    def __init__(self, *, time_cost: int, memory_cost_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        # Hashed once, so that a login for an unknown email costs the same as a wrong password.
        self._dummy_hash = self._hasher.hash("dummy password for unknown accounts")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> Verification:
        """Check `password` against a stored hash; `needs_rehash` when the cost settings changed."""
        return await asyncio.to_thread(self._verify, password_hash, password)

    async def burn_verification(self, password: str) -> None:
        """Spend the time of a real verification for an account that does not exist."""
        await asyncio.to_thread(self._verify, self._dummy_hash, password)

    def _verify(self, password_hash: str, password: str) -> Verification:
        try:
            self._hasher.verify(password_hash, password)
        except VerificationError:
            return Verification(matches=False)
        return Verification(
            matches=True, needs_rehash=self._hasher.check_needs_rehash(password_hash)
        )
