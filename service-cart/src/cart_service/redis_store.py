"""Carts in Redis: one JSON string per cart at `<prefix>cart:<user_id>`.

A shopper's change runs one Lua script that checks the rules and writes in one atomic step (one
round trip, no retries under contention). A saga event's change (`apply_event`) is optimistic
instead, so that the chassis inbox claims the event in the document with the same write: read
the document, compute the change and the claim in Python, and write with a compare-and-set script
that replaces the document only if it is still the one read (two round trips; read again on a
conflict). Every write refreshes the key's expiry.

A command whose connection broke under it is sent again (`chassis.redis_client.idempotent`) only
when landing twice changes nothing: reads, `set` (an absolute quantity), `clear`, and
`apply_event` (the inbox claim travels with the change, so a second landing finds it and does
nothing). `add` would count its units twice and `remove` would answer "not in the cart" for the
line it removed: those fail (UNAVAILABLE), and the client retries knowing what it asked for. A
connection Redis closed while it sat idle (a Redis restart) is replaced before anything is
written to it, so neither fails once Redis is back.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis
from google.protobuf.message import Message
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cart_service.domain import MAX_LINE_QUANTITY, MAX_LINES, Cart, Violation, violation_error
from cart_service.store import (
    CartStoreUnavailable,
    from_document,
    new_document,
    now_ms,
    with_cart,
)
from chassis.errors import Unavailable
from chassis.messaging import DocumentInbox
from chassis.redis_client import create_redis, idempotent

_SCRIPT = resources.files("cart_service").joinpath("cart_mutation.lua").read_text()
_REPLACE_SCRIPT = resources.files("cart_service").joinpath("cart_replace.lua").read_text()
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
MAX_WRITE_ATTEMPTS = 100
_MAX_BACKOFF_SECONDS = 0.05
# Script operations that leave the same cart and the same answer however often they land.
_IDEMPOTENT_OPS = frozenset({"set", "clear"})


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisCartStore:
    """`CartStore` on Redis."""

    def __init__(
        self, client: redis.Redis, key_prefix: str, *, ttl_days: int, inbox: DocumentInbox
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._ttl_seconds = ttl_days * 86_400
        self._inbox = inbox
        self._mutate = client.register_script(_SCRIPT)
        self._replace = client.register_script(_REPLACE_SCRIPT)

    @classmethod
    async def connect(
        cls,
        url: str,
        key_prefix: str,
        *,
        ttl_days: int,
        inbox: DocumentInbox,
        timeout_seconds: float = 2.0,
    ) -> RedisCartStore:
        client = create_redis(url, timeout_seconds=timeout_seconds, decode_responses=True)
        try:
            await client.ping()
        except _UNREACHABLE as error:
            await client.aclose()
            raise CartStoreUnavailable(
                f"cannot reach the Redis cart store at {_without_password(url)}: {error}"
            ) from error
        return cls(client, key_prefix, ttl_days=ttl_days, inbox=inbox)

    def key(self, user_id: str) -> str:
        return f"{self._prefix}cart:{user_id}"

    async def get(self, user_id: str) -> Cart:
        async with _reachable():
            raw = await idempotent(lambda: self._client.get(self.key(user_id)))
        return from_document(user_id, json.loads(raw)) if raw else Cart(user_id)

    async def add_item(
        self, user_id: str, product_id: str, quantity: int, *, stock: int, currency: str
    ) -> Cart:
        return await self._put_line("add", user_id, product_id, quantity, stock, currency)

    async def set_quantity(
        self, user_id: str, product_id: str, quantity: int, *, stock: int, currency: str
    ) -> Cart:
        if quantity == 0:
            return await self.remove_item(user_id, product_id)
        return await self._put_line("set", user_id, product_id, quantity, stock, currency)

    async def remove_item(self, user_id: str, product_id: str) -> Cart:
        return await self._run(user_id, product_id, "remove", product_id)

    async def clear(self, user_id: str) -> None:
        await self._run(user_id, "", "clear")

    async def apply_event(
        self, user_id: str, event: Message, change: Callable[[Cart], Cart]
    ) -> bool:
        async with _reachable():
            return await idempotent(lambda: self._apply_event(user_id, event, change))

    async def _apply_event(
        self, user_id: str, event: Message, change: Callable[[Cart], Cart]
    ) -> bool:
        key = self.key(user_id)
        for attempt in range(MAX_WRITE_ATTEMPTS):
            raw = await self._client.get(key)
            document = json.loads(raw) if raw else new_document(user_id)
            if not self._inbox.claim(document, event):
                return False
            changed = with_cart(document, change(from_document(user_id, document)))
            written = await self._replace(
                keys=[key], args=[raw or "", json.dumps(changed), self._ttl_seconds]
            )
            if written:
                return True
            # Another write landed between the read and this one: read again. Full jitter keeps
            # the writers of one cart from retrying in lockstep.
            ceiling = min(_MAX_BACKOFF_SECONDS, 0.001 * 2**attempt)
            await asyncio.sleep(random.uniform(0, ceiling))
        raise Unavailable(f"the cart of user {user_id} kept changing; try again")

    async def check(self) -> None:
        await idempotent(self._client.ping)

    async def close(self) -> None:
        await self._client.aclose()

    async def _put_line(
        self, op: str, user_id: str, product_id: str, quantity: int, stock: int, currency: str
    ) -> Cart:
        return await self._run(
            user_id,
            product_id,
            op,
            product_id,
            quantity,
            stock,
            currency,
            now_ms(),
            MAX_LINE_QUANTITY,
            MAX_LINES,
        )

    async def _run(self, user_id: str, product_id: str, op: str, *args: str | int) -> Cart:
        outcome, detail = await self._script(user_id, [op, self._ttl_seconds, user_id, *args])
        if outcome in ("ok", "unchanged"):
            return from_document(user_id, json.loads(detail)) if detail else Cart(user_id)
        stock = int(args[2]) if op in ("add", "set") else 0
        raise violation_error(Violation(outcome), product_id, int(detail), stock)

    async def _script(self, user_id: str, args: list[str | int]) -> tuple[str, str]:
        """Run the cart script on `user_id`'s cart; `args` start with the operation."""

        def run() -> Awaitable[tuple[str, str]]:
            return self._mutate(keys=[self.key(user_id)], args=args)  # type: ignore[no-any-return]

        async with _reachable():
            if args[0] in _IDEMPOTENT_OPS:
                return await idempotent(run)
            return await run()


@asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    try:
        yield
    except _UNREACHABLE as error:
        raise Unavailable(f"the cart store is unreachable: {error}") from error
