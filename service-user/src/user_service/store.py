"""The users table in PostgreSQL (asyncpg): the only code that reads or writes accounts."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from chassis.errors import AlreadyExists
from chassis.postgres import package_migrations, unavailable_on_outage
from user_service.domain import Role, User

# The schema this store reads and writes, shipped inside the package.
MIGRATIONS_DIR = package_migrations("user_service")

_INSERT = """
    INSERT INTO users (email, full_name, role, password_hash) VALUES ($1, $2, $3, $4)
    RETURNING id, email, full_name, role, password_hash, created_at
"""
_INSERT_IF_ABSENT = """
    INSERT INTO users (email, full_name, role, password_hash) VALUES ($1, $2, $3, $4)
    ON CONFLICT ((lower(email))) DO NOTHING
    RETURNING id, email, full_name, role, password_hash, created_at
"""
_BY_ID = "SELECT id, email, full_name, role, password_hash, created_at FROM users WHERE id = $1"
_BY_EMAIL = """
    SELECT id, email, full_name, role, password_hash, created_at FROM users
    WHERE lower(email) = lower($1)
"""


_unavailable_on_outage = unavailable_on_outage("the account database")
# Reads: run once more on a fresh connection when theirs was lost (see unavailable_on_outage).
_read = unavailable_on_outage("the account database", idempotent=True)


def _to_user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        full_name=row["full_name"],
        role=Role(row["role"]),
        password_hash=row["password_hash"],
        created_at=row["created_at"],
    )


class UserStore:
    """Accounts keyed by id, with emails unique regardless of letter case (unique index)."""

    def __init__(self, pool: asyncpg.Pool[Any], *, timeout: float = 5.0) -> None:
        self._pool = pool
        self._timeout = timeout

    @_unavailable_on_outage
    async def create(self, *, email: str, full_name: str, password_hash: str, role: Role) -> User:
        """Insert an account; AlreadyExists when the email is taken in any letter case."""
        try:
            row = await self._pool.fetchrow(
                _INSERT,
                email,
                full_name,
                role.value,
                password_hash,
                timeout=self._timeout,
            )
        except asyncpg.UniqueViolationError as error:
            raise AlreadyExists(
                "an account with this email already exists", field="email"
            ) from error
        if row is None:
            raise RuntimeError("INSERT ... RETURNING returned no row")
        return _to_user(row)

    @_unavailable_on_outage
    async def create_if_absent(
        self, *, email: str, full_name: str, password_hash: str, role: Role
    ) -> User | None:
        """Insert an account unless the email is taken; None when it was. Safe under concurrency."""
        row = await self._pool.fetchrow(
            _INSERT_IF_ABSENT,
            email,
            full_name,
            role.value,
            password_hash,
            timeout=self._timeout,
        )
        return None if row is None else _to_user(row)

    @_read
    async def by_id(self, user_id: uuid.UUID) -> User | None:
        row = await self._pool.fetchrow(_BY_ID, user_id, timeout=self._timeout)
        return None if row is None else _to_user(row)

    @_read
    async def by_email(self, email: str) -> User | None:
        row = await self._pool.fetchrow(
            _BY_EMAIL,
            email,
            timeout=self._timeout,
        )
        return None if row is None else _to_user(row)

    @_unavailable_on_outage
    async def replace_password_hash(self, user_id: uuid.UUID, *, old: str, new: str) -> bool:
        """Swap the hash only if it is still `old`: a concurrent password change is never lost."""
        status = await self._pool.execute(
            "UPDATE users SET password_hash = $3, updated_at = now()"
            " WHERE id = $1 AND password_hash = $2",
            user_id,
            old,
            new,
            timeout=self._timeout,
        )
        return bool(status == "UPDATE 1")
