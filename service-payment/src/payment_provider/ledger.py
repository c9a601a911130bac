"""The provider's books in PostgreSQL: one `authorizations` row per idempotency key, and the
`ledger` of money movements, UNIQUE (idempotency_key, kind): the proof that nothing is ever
authorised, captured, released or refunded twice for one key.

Every operation changes a key's status and writes its ledger entry together, atomically. What every
checkout asks for, the first authorise of a key with an always-authorised token and the capture of
an authorised key, is one statement each (`_authorize_new`, `_capture_authorized`); everything else
is one transaction that locks the key's row first, decides, and writes. The ledger records money
only: `authorize` (a hold placed), `capture` (the hold taken), `void` (a hold released, also when a
refund releases an uncaptured hold) and `refund` (captured money given back). So captured minus
refunded is what was really charged. A decline, a void of a key never authorised (a tombstone) or of
a declined one moves no money and writes no entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

# The first key of the advisory lock that serialises schema creation (several providers at once).
SCHEMA_LOCK = 0x9A7E

SCHEMA = """
CREATE TABLE IF NOT EXISTS authorizations (
    idempotency_key     text PRIMARY KEY CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    payment_token       text,
    amount_cents        bigint CHECK (amount_cents > 0),
    currency            char(3),
    status              text NOT NULL CHECK (status IN ('new', 'authorized', 'declined',
                                                       'captured', 'voided', 'refunded')),
    decline_reason      text,
    authorize_attempts  integer NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ledger (
    id               bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL REFERENCES authorizations (idempotency_key),
    kind             text NOT NULL CHECK (kind IN ('authorize', 'capture', 'void', 'refund')),
    amount_cents     bigint NOT NULL CHECK (amount_cents > 0),
    currency         char(3) NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    UNIQUE (idempotency_key, kind)
);
"""

# Test tokens (any other `pm_` token is declined as an unknown payment method).
TOKEN_OK = "pm_card_ok"
TOKEN_DECLINED = "pm_card_declined"
TOKEN_FLAKY = "pm_card_flaky"
TOKEN_SLOW = "pm_card_slow"
# `pm_card_flaky` fails this many authorise calls per key before it is authorised.
FLAKY_FAILURES = 2
AUTHORISED_TOKENS = frozenset({TOKEN_OK, TOKEN_FLAKY, TOKEN_SLOW})
# Authorised on their first attempt: a new key with one of these takes the one-statement path.
AUTHORISED_AT_ONCE = AUTHORISED_TOKENS - {TOKEN_FLAKY}


async def create_schema(conn: asyncpg.Connection) -> None:
    """The tables, once, whoever starts first (transaction-scoped advisory lock)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        await conn.execute(SCHEMA)


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status code and JSON body."""

    status_code: int
    body: dict[str, Any]


TRANSIENT = Reply(503, {"error": "transient"})
NOT_FOUND = Reply(404, {"error": "not_found"})


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    idempotency_key: str
    payment_token: str
    amount_cents: int
    currency: str


_ROW = (
    "idempotency_key, payment_token, amount_cents, currency, status, decline_reason,"
    " authorize_attempts, created_at, updated_at"
)


def _iso(value: datetime) -> str:
    return value.isoformat()


def row_json(row: asyncpg.Record) -> dict[str, Any]:
    currency = row["currency"]
    return {
        "idempotency_key": row["idempotency_key"],
        "payment_token": row["payment_token"],
        "amount_cents": row["amount_cents"],
        "currency": None if currency is None else str(currency),
        "status": row["status"],
        "decline_reason": row["decline_reason"],
        "authorize_attempts": row["authorize_attempts"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }


async def _locked(conn: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_ROW} FROM authorizations WHERE idempotency_key = $1 FOR UPDATE",  # noqa: S608
        key,
    )


async def _set_status(
    conn: asyncpg.Connection,
    key: str,
    status: str,
    *,
    decline_reason: str | None = None,
    entry: str | None = None,
    attempts: int | None = None,
) -> None:
    """The key's new status (and decline reason, and authorise attempts when given) and, with
    `entry`, its ledger entry of that kind for the key's amount: one statement."""
    await conn.execute(
        "WITH changed AS ("
        " UPDATE authorizations SET status = $2, decline_reason = $3,"
        " authorize_attempts = COALESCE($5::int, authorize_attempts), updated_at = now()"
        " WHERE idempotency_key = $1 RETURNING idempotency_key, amount_cents, currency"
        ") INSERT INTO ledger (idempotency_key, kind, amount_cents, currency)"
        " SELECT idempotency_key, $4::text, amount_cents, currency FROM changed"
        " WHERE $4::text IS NOT NULL",
        key,
        status,
        decline_reason,
        entry,
        attempts,
    )


async def is_decided(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> bool:
    """Whether an authorise with this key would answer a stored outcome (no new decision)."""
    status = await conn.fetchval(
        "SELECT status FROM authorizations WHERE idempotency_key = $1", key
    )
    return status is not None and status != "new"


async def _authorize_new(conn: asyncpg.Connection, request: AuthorizeRequest) -> bool:
    """A key never seen, authorised with its ledger entry in one statement; False when the key
    exists (a repeat, a reuse, a void's tombstone): the locked path decides then."""
    created = await conn.fetchval(
        "WITH created AS ("
        " INSERT INTO authorizations (idempotency_key, payment_token, amount_cents, currency,"
        " status, authorize_attempts) VALUES ($1, $2, $3, $4, 'authorized', 1)"
        " ON CONFLICT DO NOTHING RETURNING idempotency_key, amount_cents, currency"
        "), entry AS ("
        " INSERT INTO ledger (idempotency_key, kind, amount_cents, currency)"
        " SELECT idempotency_key, 'authorize', amount_cents, currency FROM created"
        ") SELECT count(*) FROM created",
        request.idempotency_key,
        request.payment_token,
        request.amount_cents,
        request.currency,
    )
    return bool(created)


async def authorize(conn: asyncpg.Connection, request: AuthorizeRequest) -> Reply:
    key = request.idempotency_key
    if request.payment_token in AUTHORISED_AT_ONCE and await _authorize_new(conn, request):
        return Reply(200, {"status": "authorized"})
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO authorizations (idempotency_key, payment_token, amount_cents, currency,"
            " status) VALUES ($1, $2, $3, $4, 'new') ON CONFLICT DO NOTHING",
            key,
            request.payment_token,
            request.amount_cents,
            request.currency,
        )
        row = await _locked(conn, key)
        if row is None:
            raise RuntimeError(f"authorization {key} vanished under its lock")
        if row["status"] == "voided":
            return Reply(409, {"status": "voided"})  # a late retry never charges
        if (row["payment_token"], row["amount_cents"], row["currency"]) != (
            request.payment_token,
            request.amount_cents,
            request.currency,
        ):
            return Reply(
                409,
                {
                    "error": "idempotency_key_reused",
                    "detail": "this key was used with another token, amount or currency",
                },
            )
        status = row["status"]
        if status in ("authorized", "captured", "refunded"):
            return Reply(200, {"status": "authorized"})
        if status == "declined":
            return Reply(200, {"status": "declined", "reason": row["decline_reason"]})
        attempts = row["authorize_attempts"] + 1
        token = request.payment_token
        if token == TOKEN_FLAKY and attempts <= FLAKY_FAILURES:
            # The attempt is counted (the transaction commits); the status stays `new`.
            await _set_status(conn, key, status, attempts=attempts)
            return TRANSIENT
        if token in AUTHORISED_TOKENS:
            await _set_status(conn, key, "authorized", entry="authorize", attempts=attempts)
            return Reply(200, {"status": "authorized"})
        reason = "card_declined" if token == TOKEN_DECLINED else "unknown_payment_method"
        await _set_status(conn, key, "declined", decline_reason=reason, attempts=attempts)
        return Reply(200, {"status": "declined", "reason": reason})


async def _capture_authorized(conn: asyncpg.Connection, key: str) -> bool:
    """An authorised key captured with its ledger entry in one statement; False when the key is
    in any other state (or unknown): the locked path answers then."""
    captured = await conn.fetchval(
        "WITH changed AS ("
        " UPDATE authorizations SET status = 'captured', updated_at = now()"
        " WHERE idempotency_key = $1 AND status = 'authorized'"
        " RETURNING idempotency_key, amount_cents, currency"
        "), entry AS ("
        " INSERT INTO ledger (idempotency_key, kind, amount_cents, currency)"
        " SELECT idempotency_key, 'capture', amount_cents, currency FROM changed"
        ") SELECT count(*) FROM changed",
        key,
    )
    return bool(captured)


async def capture(conn: asyncpg.Connection, key: str) -> Reply:
    if await _capture_authorized(conn, key):
        return Reply(200, {"status": "captured"})
    async with conn.transaction():
        row = await _locked(conn, key)
        if row is None:
            return NOT_FOUND
        status = row["status"]
        if status == "authorized":
            await _set_status(conn, key, "captured", entry="capture")
            return Reply(200, {"status": "captured"})
        if status == "captured":
            return Reply(200, {"status": "captured"})
        return Reply(409, {"status": status})


async def void(conn: asyncpg.Connection, key: str) -> Reply:
    async with conn.transaction():
        tombstone = await conn.fetchval(
            "INSERT INTO authorizations (idempotency_key, status) VALUES ($1, 'voided')"
            " ON CONFLICT DO NOTHING RETURNING true",
            key,
        )
        if tombstone:
            return Reply(200, {"status": "voided"})  # a later authorise is refused
        row = await _locked(conn, key)
        if row is None:
            raise RuntimeError(f"authorization {key} vanished under its lock")
        status = row["status"]
        if status == "authorized":
            await _set_status(conn, key, "voided", entry="void")
        elif status in ("new", "declined"):
            await _set_status(conn, key, "voided", decline_reason=row["decline_reason"])
        elif status != "voided":
            return Reply(409, {"status": status})
        return Reply(200, {"status": "voided"})


async def refund(conn: asyncpg.Connection, key: str) -> Reply:
    async with conn.transaction():
        row = await _locked(conn, key)
        if row is None:
            return NOT_FOUND
        status = row["status"]
        if status == "captured":
            await _set_status(conn, key, "refunded", entry="refund")
        elif status == "authorized":
            # Nothing was taken yet: the hold is released (a `void` entry) and reported refunded.
            await _set_status(conn, key, "refunded", entry="void")
        elif status != "refunded":
            return Reply(409, {"status": status})
        return Reply(200, {"status": "refunded", "amount_cents": row["amount_cents"]})


async def authorization(conn: asyncpg.Pool, key: str) -> Reply:
    row = await conn.fetchrow(
        f"SELECT {_ROW} FROM authorizations WHERE idempotency_key = $1",  # noqa: S608
        key,
    )
    return NOT_FOUND if row is None else Reply(200, row_json(row))


async def entries(conn: asyncpg.Pool, key: str | None = None) -> Reply:
    rows = await conn.fetch(
        "SELECT idempotency_key, kind, amount_cents, currency, at FROM ledger"
        " WHERE $1::text IS NULL OR idempotency_key = $1 ORDER BY id",
        key,
    )
    return Reply(
        200,
        {
            "entries": [
                {
                    "idempotency_key": row["idempotency_key"],
                    "kind": row["kind"],
                    "amount_cents": row["amount_cents"],
                    "currency": str(row["currency"]),
                    "at": _iso(row["at"]),
                }
                for row in rows
            ]
        },
    )
