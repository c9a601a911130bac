"""ProductCache: Redis cache-aside in front of ProductStore reads, with in-process single-flight.

Values are serialized `ecommerce.product.v1.Product` messages under `<prefix>product:<id>`,
behind the product's version (`#<version>#<message>`: the row's `version`, bumped by every
update). Redis is an optimisation only: any Redis failure is counted and the read goes to
Postgres. Every command here lands harmlessly twice (MGET, SCAN, SET of a tombstone, a
versioned write), so one whose connection broke under it runs once more on a fresh connection,
inside the same deadline (`chassis.redis_client.idempotent`).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import TypeVar, cast

from google.protobuf.message import DecodeError
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from chassis.logging import get_logger
from chassis.redis_client import idempotent
from product_service.domain import Product
from product_service.proto_mapping import decode_product, encode_product
from product_service.store import ProductStore

CACHE_REQUESTS = Counter(
    "product_cache_requests", "Product cache lookups by result (hit or miss)", ["result"]
)
CACHE_ERRORS = Counter(
    "product_cache_errors",
    "Redis calls that failed or timed out; the read fell back to Postgres",
    ["operation"],
)

# A cached value starts with "#" (a version), so this can never be one.
TOMBSTONE = b"tombstone"

# Write each product (KEYS[i], version ARGV[2i], value ARGV[2i+1], for ARGV[1] seconds) unless
# Redis holds a tombstone or the same or a newer version: a write never takes a product back
# to an older state, whichever of two writes lands last. A value of another format counts as
# older. Returns how many were written.
WRITE_NEWER = """
local written = 0
for i, key in ipairs(KEYS) do
  local version = tonumber(ARGV[2 * i])
  local current = redis.call('GET', key)
  if current ~= 'tombstone' then
    local held = -1
    if current then
      held = tonumber(string.match(current, '^#(%d+)#')) or -1
    end
    if held < version then
      redis.call('SET', key, ARGV[2 * i + 1], 'EX', ARGV[1])
      written = written + 1
    end
  end
end
return written
"""

T = TypeVar("T")
log = get_logger(__name__)


class ProductCache:
    """Cache-aside reads; after every commit that changes a product, `refresh` with the products
    as the commit left them (a stock change: the saga's reservations, whose every checkout
    would otherwise empty the cache of the products it touched) or `invalidate` (a change of
    the catalogue).

    Versions: every write here (a fill after a miss, a refresh after a commit) is conditional
    on Redis holding no tombstone and no newer version of the product, in one script: two
    refreshes of one product from two replicas land in any order and the newer stays, and a
    fill of a row read before a commit cannot overwrite the refresh of that commit.

    The stale-set race: a reader misses, reads the OLD row, the writer commits and invalidates,
    then the reader would write the old row back for a whole TTL. We prevent it with a
    short-lived tombstone instead of a plain DEL: invalidation overwrites the key with TOMBSTONE for
    `tombstone_seconds`, readers treat a tombstone as a miss, and a tombstone blocks fills. A
    reader only fills when its own database read started less than half a tombstone lifetime
    ago, so any commit after that read began left a tombstone that is still alive when the fill
    arrives.

    An invalidation Redis does not take (unreachable) is remembered and retried before every
    read; until it lands, those products are read from Postgres and not filled, so the value
    cached before an outage is never served after it (within this process: a replica that
    changed nothing has nothing to remember).
    """

    def __init__(
        self,
        redis: Redis,
        store: ProductStore,
        *,
        key_prefix: str,
        ttl_seconds: int,
        tombstone_seconds: float = 5.0,
        timeout_seconds: float = 0.25,
    ) -> None:
        self._redis = redis
        self._write_newer = redis.register_script(WRITE_NEWER)
        self._store = store
        self._prefix = key_prefix
        self._ttl = ttl_seconds
        self._tombstone_ms = int(tombstone_seconds * 1000)
        self._timeout = timeout_seconds
        self._inflight: dict[uuid.UUID, asyncio.Task[dict[uuid.UUID, Product]]] = {}
        # Products whose invalidation Redis did not take (it was unreachable): what it holds
        # for them may be older than the database, so it is not read until a tombstone lands.
        self._unconfirmed: set[uuid.UUID] = set()
        # An earlier process may have died between a commit and its invalidation, leaving a
        # value older than the database; which one cannot be known, so this process turns every
        # cached product into a tombstone before it trusts the cache (retried until Redis takes it).
        self._swept = False
        self._sweeping = asyncio.Lock()

    def key(self, product_id: uuid.UUID) -> str:
        return f"{self._prefix}product:{product_id}"

    async def get(self, product_id: uuid.UUID) -> Product | None:
        return (await self.get_many([product_id])).get(product_id)

    async def get_many(self, product_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Product]:
        """The products found among `product_ids` (unknown ids are simply absent).

        Single-flight: an id already being fetched by another call in this process is joined,
        not fetched again, so a burst of misses for one id costs one Redis and one SQL read.
        The fetch runs in its own task so that a caller giving up (deadline, cancel) does not
        cancel it for the others waiting on it.
        """
        to_fetch = [i for i in dict.fromkeys(product_ids) if i not in self._inflight]
        if to_fetch:
            task = asyncio.create_task(self._fetch(to_fetch))
            for product_id in to_fetch:
                self._inflight[product_id] = task
            task.add_done_callback(functools.partial(self._forget, tuple(to_fetch)))
        wanted = set(product_ids)
        found: dict[uuid.UUID, Product] = {}
        for task in {self._inflight[i] for i in wanted}:
            loaded = await asyncio.shield(task)
            found.update({i: p for i, p in loaded.items() if i in wanted})
        return found

    async def invalidate(self, product_ids: Iterable[uuid.UUID]) -> None:
        """Call after the commit that changed these products (see the class docstring)."""
        product_ids = list(product_ids)

        def detach_inflight() -> None:
            for product_id in product_ids:
                self._inflight.pop(product_id, None)

        # A fetch in flight may have read the row before the commit: later readers must not join
        # it. Once more after the write: a fetch that began while the tombstone was on its way
        # may have read the old cached value.
        detach_inflight()
        self._unconfirmed.update(product_ids)
        try:
            await self._confirm_invalidations()
        finally:
            detach_inflight()

    async def refresh(self, products: Sequence[Product]) -> None:
        """Call after the commit that changed these products, with the products as it left
        them: Redis gets them (unless it holds a newer version, or a tombstone), so reads after
        a reservation hit the cache. When Redis does not take them, they are invalidated."""
        product_ids = [product.id for product in products]
        for product_id in product_ids:
            self._inflight.pop(product_id, None)
        if product_ids and await self._write(products, "refresh") is not None:
            # Redis now holds this version, a newer one or a tombstone for each: an older
            # invalidation that did not land is overtaken.
            self._unconfirmed.difference_update(product_ids)
            for product_id in product_ids:
                self._inflight.pop(product_id, None)
            return
        await self.invalidate(product_ids)

    async def _confirm_invalidations(self) -> None:
        """Tombstones for every product whose invalidation is not known to have landed; those
        stay unconfirmed (and unread from Redis) while Redis does not take them."""
        pending = set(self._unconfirmed)
        if not pending:
            return

        async def write_tombstones() -> bool:
            async with self._redis.pipeline(transaction=False) as pipe:
                for product_id in pending:
                    pipe.set(self.key(product_id), TOMBSTONE, px=self._tombstone_ms)
                await pipe.execute()
            return True

        if await self._redis_call("invalidate", write_tombstones):
            self._unconfirmed -= pending

    def _forget(self, product_ids: tuple[uuid.UUID, ...], task: asyncio.Task[object]) -> None:
        for product_id in product_ids:
            if self._inflight.get(product_id) is task:
                del self._inflight[product_id]
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported twice

    async def _sweep(self) -> bool:
        """Tombstones for every product an earlier process cached (once per process); whether
        the cache can be trusted now."""
        if self._swept:
            return True
        async with self._sweeping:
            if self._swept:
                return True

            async def tombstone_all() -> bool:
                async for keys in _batches(self._redis.scan_iter(f"{self._prefix}product:*")):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for key in keys:
                            pipe.set(key, TOMBSTONE, px=self._tombstone_ms)
                        await pipe.execute()
                return True

            self._swept = bool(await self._redis_call("sweep", tombstone_all, within=2.0))
            return self._swept

    async def _fetch(self, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, Product]:
        found: dict[uuid.UUID, Product] = {}
        trusted = await self._sweep()
        await self._confirm_invalidations()
        cached = None
        if trusted:
            cached = await self._redis_call(
                "mget", lambda: self._redis.mget([self.key(i) for i in product_ids])
            )
        misses: list[uuid.UUID] = []
        for product_id, value in zip(product_ids, cached or [None] * len(product_ids), strict=True):
            product = None if product_id in self._unconfirmed else self._decode(value)
            if product is None:
                misses.append(product_id)
            else:
                found[product_id] = product
        CACHE_REQUESTS.labels(result="hit").inc(len(found))
        CACHE_REQUESTS.labels(result="miss").inc(len(misses))
        if misses:
            started = time.monotonic()
            loaded = await self._store.get_many(misses)
            fresh = [p for p in loaded.values() if p.id not in self._unconfirmed]
            if trusted and fresh and (time.monotonic() - started) * 1000 < self._tombstone_ms / 2:
                await self._fill(fresh)
            found.update(loaded)
        return found

    @staticmethod
    def _decode(value: object) -> Product | None:
        """The cached product, or None for an absent key, a tombstone or an undecodable value."""
        if value is None or value == TOMBSTONE:
            return None
        try:
            # The client runs with decode_responses off: `#<version>#<message>`.
            data = cast(bytes, value)
            if not data.startswith(b"#"):
                raise ValueError("a cached value without a version")
            _, version, message = data.split(b"#", 2)
            return replace(decode_product(message), version=int(version))
        except (DecodeError, ValueError):
            # Written by something else (an old format, a hand edit): read through instead.
            CACHE_ERRORS.labels(operation="decode").inc()
            return None

    async def _fill(self, products: Sequence[Product]) -> None:
        await self._write(products, "fill")

    async def _write(self, products: Sequence[Product], operation: str) -> int | None:
        """Each product unless Redis holds it newer or a tombstone; None when Redis failed."""
        arguments: list[bytes | int] = [self._ttl]
        for product in products:
            arguments += [product.version, _versioned(product)]

        async def write() -> int:
            return int(
                await self._write_newer(
                    keys=[self.key(product.id) for product in products], args=arguments
                )
            )

        return await self._redis_call(operation, write)

    async def _redis_call(
        self, operation: str, call: Callable[[], Awaitable[T]], *, within: float | None = None
    ) -> T | None:
        try:
            async with asyncio.timeout(within or self._timeout):
                return await idempotent(call)
        except (RedisError, OSError, TimeoutError) as error:
            CACHE_ERRORS.labels(operation=operation).inc()
            log.warning("product_cache_unavailable", operation=operation, error=repr(error))
            return None


def _versioned(product: Product) -> bytes:
    return b"#%d#" % product.version + encode_product(product)


async def _batches(keys: AsyncIterator[bytes], size: int = 500) -> AsyncIterator[list[bytes]]:
    batch: list[bytes] = []
    async for key in keys:
        batch.append(key)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
