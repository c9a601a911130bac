"""ListOrders pages: the page request rules and the opaque page token (pure, no I/O).

A token is URL-safe base64 (no padding) of `1.<created_at in epoch microseconds>.<order id hex>.
<check>`, where `check` is a truncated SHA-256 of the rest and the owner's id. It is not a secret
(it can only move its owner's own cursor); the check makes a token that is not exactly as issued,
or issued to another user, an INVALID_ARGUMENT instead of a silently different page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from chassis.errors import InvalidArgument

PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
TOKEN_VERSION = "1"
MAX_TOKEN_CHARS = 128
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CHECK_CHARS = 16


@dataclass(frozen=True, slots=True)
class PageCursor:
    """The last order of a page: the next page starts strictly after (created_at, id), newest
    first."""

    created_at: datetime
    order_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class PageRequest:
    size: int
    after: PageCursor | None


def page_request(*, user_id: uuid.UUID, page_size: int, page_token: str) -> PageRequest:
    if page_size == 0:
        page_size = PAGE_SIZE_DEFAULT
    if not 1 <= page_size <= PAGE_SIZE_MAX:
        raise InvalidArgument(f"page_size must be 1 to {PAGE_SIZE_MAX}", field="page_size")
    after = decode_page_token(page_token, user_id=user_id) if page_token else None
    return PageRequest(size=page_size, after=after)


def _check(body: str, user_id: uuid.UUID) -> str:
    return hashlib.sha256(f"{body}.{user_id.hex}".encode()).hexdigest()[:_CHECK_CHARS]


def encode_page_token(cursor: PageCursor, *, user_id: uuid.UUID) -> str:
    micros = (cursor.created_at - _EPOCH) // _MICROSECOND
    body = f"{TOKEN_VERSION}.{micros}.{cursor.order_id.hex}"
    raw = f"{body}.{_check(body, user_id)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, *, user_id: uuid.UUID) -> PageCursor:
    """The cursor inside `token`; InvalidArgument(page_token) unless this service issued exactly
    this token to this user."""
    bad = InvalidArgument(
        "page_token is not a token this service issued for these orders", field="page_token"
    )
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise bad
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        version, micros, order_hex, check = raw.split(".")
        body = f"{version}.{micros}.{order_hex}"
        if version != TOKEN_VERSION or check != _check(body, user_id):
            raise bad
        if not micros.isdigit() or len(order_hex) != 32:
            raise bad
        created_at = _EPOCH + int(micros) * _MICROSECOND
        return PageCursor(created_at=created_at, order_id=uuid.UUID(hex=order_hex))
    except (binascii.Error, ValueError, OverflowError):
        # UnicodeDecodeError is a ValueError; so is a wrong number of parts.
        raise bad from None
