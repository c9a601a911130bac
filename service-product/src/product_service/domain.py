"""Catalogue and stock rules: what a valid product, patch, id and page request are, the page token
format, and how an order's lines are reserved (all or nothing).

Pure: no I/O. Every rule raises `InvalidArgument` naming the offending field.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from chassis.errors import InvalidArgument
from chassis.messaging import PoisonMessage
from chassis.validation import checked_price_cents, checked_text

SKU_MAX = 64
NAME_MAX = 200
DESCRIPTION_MAX = 5000
PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
BATCH_MAX = 100
DEFAULT_CURRENCY = "USD"
PAGE_TOKEN_VERSION = 1
INT32_MAX = 2**31 - 1

_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True, slots=True)
class Product:
    id: uuid.UUID
    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    stock: int
    created_at: datetime
    updated_at: datetime
    # Bumped by every update of the row (a trigger): orders the product's states for the cache.
    version: int = 0


@dataclass(frozen=True, slots=True)
class NewProduct:
    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    stock: int


@dataclass(frozen=True, slots=True)
class ProductPatch:
    """Only the fields that are not None change."""

    name: str | None = None
    description: str | None = None
    price_cents: int | None = None
    stock: int | None = None

    def is_empty(self) -> bool:
        return all(v is None for v in (self.name, self.description, self.price_cents, self.stock))


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where the next page starts: after (lower(name), id) of the last row, for one query."""

    last_name_key: str
    last_id: uuid.UUID
    query: str


@dataclass(frozen=True, slots=True)
class PageRequest:
    size: int
    query: str
    after: PageCursor | None


def parse_id(raw: str, *, field: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"{field} must be a UUID, got {raw!r}", field=field) from None


def parse_ids(raw_ids: list[str]) -> list[uuid.UUID]:
    """Validate a batch: at most BATCH_MAX ids, duplicates dropped, first-asked order kept."""
    if len(raw_ids) > BATCH_MAX:
        raise InvalidArgument(f"ids: at most {BATCH_MAX} ids per call", field="ids")
    ids = [parse_id(raw, field="ids") for raw in raw_ids]
    return list(dict.fromkeys(ids))


def _check_sku(sku: str) -> str:
    return checked_text(sku, field="sku", min_len=1, max_len=SKU_MAX)


def _check_name(name: str) -> str:
    return checked_text(name, field="name", min_len=1, max_len=NAME_MAX)


def _check_description(description: str) -> str:
    return checked_text(description, field="description", max_len=DESCRIPTION_MAX, multiline=True)


def _check_price(price_cents: int) -> int:
    # Capped (chassis.validation.MAX_PRICE_CENTS) so that no cart or order total can overflow.
    return checked_price_cents(price_cents)


def _check_stock(stock: int) -> int:
    if not 0 <= stock <= INT32_MAX:
        raise InvalidArgument("stock must be zero or more", field="stock")
    return stock


def _check_currency(currency: str) -> str:
    if not currency:
        return DEFAULT_CURRENCY
    if not _CURRENCY.fullmatch(currency):
        raise InvalidArgument(
            "currency must be an ISO 4217 code of three upper-case letters", field="currency"
        )
    return currency


def new_product(
    *, sku: str, name: str, description: str, price_cents: int, currency: str, stock: int
) -> NewProduct:
    return NewProduct(
        sku=_check_sku(sku),
        name=_check_name(name),
        description=_check_description(description),
        price_cents=_check_price(price_cents),
        currency=_check_currency(currency),
        stock=_check_stock(stock),
    )


def product_patch(
    *,
    name: str | None,
    description: str | None,
    price_cents: int | None,
    stock: int | None,
) -> ProductPatch:
    return ProductPatch(
        name=None if name is None else _check_name(name),
        description=None if description is None else _check_description(description),
        price_cents=None if price_cents is None else _check_price(price_cents),
        stock=None if stock is None else _check_stock(stock),
    )


def encode_page_token(cursor: PageCursor) -> str:
    payload = {
        "v": PAGE_TOKEN_VERSION,
        "n": cursor.last_name_key,
        "i": str(cursor.last_id),
        "q": cursor.query,
    }
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, *, query: str) -> PageCursor:
    """The cursor inside `token`; InvalidArgument(page_token) for garbage or another query's."""
    bad = InvalidArgument("page_token is not a token this service issued", field="page_token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, dict) or payload.get("v") != PAGE_TOKEN_VERSION:
            raise bad
        name_key, last_id, token_query = payload["n"], payload["i"], payload["q"]
        if not isinstance(name_key, str) or not isinstance(token_query, str):
            raise bad
        # An edited token must not reach PostgreSQL with text it cannot hold (NUL, a lone
        # surrogate): that would be an INTERNAL error instead of this INVALID_ARGUMENT.
        if "\x00" in name_key:
            raise bad
        name_key.encode()
        cursor = PageCursor(last_name_key=name_key, last_id=uuid.UUID(last_id), query=token_query)
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
        # UnicodeEncodeError (a lone surrogate) is a ValueError.
        raise bad from None
    if cursor.query != query:
        raise InvalidArgument("page_token belongs to a different query", field="page_token")
    return cursor


def page_request(*, page_size: int, page_token: str, query: str) -> PageRequest:
    if page_size == 0:
        page_size = PAGE_SIZE_DEFAULT
    if not 1 <= page_size <= PAGE_SIZE_MAX:
        raise InvalidArgument(f"page_size must be 1 to {PAGE_SIZE_MAX}", field="page_size")
    checked_text(query, field="query", max_len=NAME_MAX)
    after = decode_page_token(page_token, query=query) if page_token else None
    return PageRequest(size=page_size, query=query, after=after)


def substring_pattern(query: str) -> str:
    """A LIKE pattern (escape character backslash) matching `query` as a literal substring.

    Its letter case is left alone: the SQL lowers both sides with PostgreSQL's lower(), because
    Python's differs (final sigma, dotted capital I) and the match must fold case exactly as the
    sort key does.
    """
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def like_pattern(query: str) -> str:
    """`substring_pattern` of the query lowered by Python (ASCII callers only; see above)."""
    return substring_pattern(query.lower())


# --- Stock reservations (the saga) ------------------------------------------------------------

MAX_ORDER_LINE_QUANTITY = 10_000


class MalformedOrderEvent(PoisonMessage):
    """An order event whose ids or quantities no retry can make valid (dead-lettered at once)."""


@dataclass(frozen=True, slots=True)
class StockLine:
    """Units of one product an order takes from (or gives back to) stock."""

    product_id: uuid.UUID
    quantity: int


@dataclass(frozen=True, slots=True)
class Shortage:
    """The first line of an order that stock could not cover."""

    product_id: uuid.UUID
    requested: int
    available: int


def parse_order_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except (ValueError, AttributeError, TypeError):
        raise MalformedOrderEvent(f"order_id is not a UUID: {raw!r}") from None


def stock_lines(raw: Iterable[tuple[str, int]]) -> list[StockLine]:
    """An order's lines, one per product (repeated products summed), in product id order: the
    order rows are locked in, so that two reservations never wait on each other (no deadlock)."""
    totals: dict[uuid.UUID, int] = {}
    for product_id, quantity in raw:
        try:
            key = uuid.UUID(product_id)
        except (ValueError, AttributeError, TypeError):
            raise MalformedOrderEvent(f"product_id is not a UUID: {product_id!r}") from None
        if not 0 < quantity <= MAX_ORDER_LINE_QUANTITY:
            raise MalformedOrderEvent(
                f"quantity {quantity} of {key} is not 1..{MAX_ORDER_LINE_QUANTITY}"
            )
        totals[key] = totals.get(key, 0) + quantity
    if not totals:
        raise MalformedOrderEvent("an order has at least one line")
    return [StockLine(product_id, totals[product_id]) for product_id in sorted(totals)]


def first_shortage(
    lines: Sequence[StockLine], in_stock: Mapping[uuid.UUID, int]
) -> Shortage | None:
    """The first line `in_stock` cannot cover (a product that does not exist has none), or None
    when every line can be reserved: all or nothing."""
    for line in lines:
        available = in_stock.get(line.product_id, 0)
        if available < line.quantity:
            return Shortage(line.product_id, line.quantity, available)
    return None
