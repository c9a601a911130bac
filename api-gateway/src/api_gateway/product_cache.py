"""In-process micro-cache of rendered product bodies for GET /api/v1/products/{id}.

Bounded, TTL'd (default 1 s) and single-flight: concurrent misses for one id share one
upstream call. This gateway's own PATCH evicts the entry (and detaches any in-flight load
that started before it), so the writer's next read sees the new value. Other replicas may
serve the old value for at most the TTL after a change.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial

from prometheus_client import Counter

CACHE_REQUESTS = Counter(
    "gateway_product_cache_requests_total",
    "Product micro-cache lookups by result (hit, miss, shared: joined an in-flight load).",
    ["result"],
)
_HIT = CACHE_REQUESTS.labels(result="hit")
_MISS = CACHE_REQUESTS.labels(result="miss")
_SHARED = CACHE_REQUESTS.labels(result="shared")

Loader = Callable[[], Awaitable[bytes]]


class ProductMicroCache:
    """Maps product id -> (refresh time, expiry, response body bytes).

    Past half its TTL an entry is still served, and the first read that sees it so starts a
    load in the background (refresh-ahead): a hot product is renewed before it expires, so no
    read waits for the upstream call, and none is ever served older than the TTL. Under load
    the reads that all waited on one expired entry's refresh were the gateway's slowest."""

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, float, bytes]] = OrderedDict()
        self._in_flight: dict[str, asyncio.Future[bytes]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, product_id: str, load: Loader) -> bytes:
        entry = self._entries.get(product_id)
        if entry is not None:
            now = self._clock()
            if entry[1] > now:
                _HIT.inc()
                if entry[0] <= now and product_id not in self._in_flight:
                    self._start(product_id, load)
                return entry[2]
            del self._entries[product_id]
        flight = self._in_flight.get(product_id)
        if flight is None:
            _MISS.inc()
            flight = self._start(product_id, load)
        else:
            _SHARED.inc()
        return await asyncio.shield(flight)

    def _start(self, product_id: str, load: Loader) -> asyncio.Future[bytes]:
        # The load runs as its own task so a leader whose client goes away does not cancel it
        # for the requests sharing it.
        flight = asyncio.ensure_future(load())
        self._in_flight[product_id] = flight
        flight.add_done_callback(partial(self._landed, product_id))
        return flight

    def _landed(self, product_id: str, flight: asyncio.Future[bytes]) -> None:
        # An eviction during the load detached this flight: its body may predate the change.
        if self._in_flight.get(product_id) is not flight:
            return
        del self._in_flight[product_id]
        if flight.cancelled() or flight.exception() is not None or self._ttl <= 0:
            return
        self._store(product_id, flight.result())

    def _store(self, product_id: str, body: bytes) -> None:
        now = self._clock()
        self._entries[product_id] = (now + self._ttl / 2, now + self._ttl, body)
        self._entries.move_to_end(product_id)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def evict(self, product_id: str) -> None:
        self._entries.pop(product_id, None)
        self._in_flight.pop(product_id, None)
