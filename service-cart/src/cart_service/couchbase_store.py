"""Carts in Couchbase: one JSON document per cart keyed `cart::<user_id>`, changed with CAS.

Each change reads the document and its CAS, applies the pure rules of `domain` (and, for a saga
event, the chassis inbox's claim) to it, and writes only if nobody wrote in between; a conflict is
retried (bounded, with jitter). Every write sets the expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from acouchbase.bucket import Bucket
from acouchbase.cluster import Cluster
from acouchbase.collection import Collection
from couchbase.auth import PasswordAuthenticator
from couchbase.diagnostics import PingState, ServiceType
from couchbase.exceptions import (
    AmbiguousTimeoutException,
    CasMismatchException,
    CouchbaseException,
    DocumentExistsException,
    DocumentNotFoundException,
    ServiceUnavailableException,
    TemporaryFailException,
    TimeoutException,
    UnAmbiguousTimeoutException,
)
from couchbase.options import (
    ClusterOptions,
    ClusterTimeoutOptions,
    InsertOptions,
    PingOptions,
    ReplaceOptions,
)
from google.protobuf.message import Message

from cart_service import domain
from cart_service.domain import Cart
from cart_service.settings import CouchbaseLocation
from cart_service.store import (
    CartStoreUnavailable,
    from_document,
    new_document,
    now_ms,
    with_cart,
)
from chassis.errors import Unavailable
from chassis.messaging import DocumentInbox

MAX_CAS_ATTEMPTS = 100
_MAX_BACKOFF_SECONDS = 0.05
_UNREACHABLE = (
    AmbiguousTimeoutException,
    UnAmbiguousTimeoutException,
    TimeoutException,
    ServiceUnavailableException,
    TemporaryFailException,
)


class CouchbaseCartStore:
    """`CartStore` on Couchbase."""

    def __init__(
        self,
        cluster: Cluster,
        bucket: Bucket,
        collection: Collection,
        *,
        ttl_days: int,
        inbox: DocumentInbox,
    ) -> None:
        self._cluster = cluster
        self._bucket = bucket
        self._collection = collection
        self._expiry = timedelta(days=ttl_days)
        self._inbox = inbox

    @classmethod
    async def connect(
        cls,
        location: CouchbaseLocation,
        *,
        ttl_days: int,
        inbox: DocumentInbox,
        timeout_seconds: float = 5.0,
    ) -> CouchbaseCartStore:
        """Opens the bucket, or raises CartStoreUnavailable naming the connstr and bucket."""
        timeout = timedelta(seconds=timeout_seconds)
        options = ClusterOptions(
            PasswordAuthenticator(location.username, location.password),
            timeout_options=ClusterTimeoutOptions(
                connect_timeout=timeout, bootstrap_timeout=timeout, kv_timeout=timedelta(seconds=2)
            ),
        )
        where = f"Couchbase at {location.connstr} (bucket {location.bucket!r})"
        cluster: Cluster | None = None
        try:
            # The SDK honours its own timeouts; asyncio.timeout is the backstop against a hang.
            async with asyncio.timeout(timeout_seconds * 2):
                cluster = await Cluster.connect(location.connstr, options)
                bucket = cluster.bucket(location.bucket)
                await bucket.on_connect()
        except (CouchbaseException, TimeoutError, OSError) as error:
            # Startup retries this hook: a cluster opened before the bucket failed must not leak.
            if cluster is not None:
                with contextlib.suppress(CouchbaseException, OSError):
                    await cluster.close()
            raise CartStoreUnavailable(f"cannot reach the cart store {where}: {error}") from error
        collection = bucket.scope(location.scope).collection(location.collection)
        return cls(cluster, bucket, collection, ttl_days=ttl_days, inbox=inbox)

    @property
    def collection(self) -> Collection:
        return self._collection

    @staticmethod
    def key(user_id: str) -> str:
        return f"cart::{user_id}"

    async def get(self, user_id: str) -> Cart:
        document, _ = await self._read(user_id)
        return from_document(user_id, document)

    async def add_item(
        self, user_id: str, product_id: str, quantity: int, *, stock: int, currency: str
    ) -> Cart:
        at = now_ms()
        return await self._apply(
            user_id,
            lambda cart: domain.add_item(
                cart, product_id, quantity, stock=stock, currency=currency, now_ms=at
            ),
        )

    async def set_quantity(
        self, user_id: str, product_id: str, quantity: int, *, stock: int, currency: str
    ) -> Cart:
        at = now_ms()
        return await self._apply(
            user_id,
            lambda cart: domain.set_quantity(
                cart, product_id, quantity, stock=stock, currency=currency, now_ms=at
            ),
        )

    async def remove_item(self, user_id: str, product_id: str) -> Cart:
        return await self._apply(user_id, lambda cart: domain.remove_item(cart, product_id))

    async def clear(self, user_id: str) -> None:
        await self._apply(user_id, domain.clear)

    async def apply_event(
        self, user_id: str, event: Message, change: Callable[[Cart], Cart]
    ) -> bool:
        claimed = False

        def claim_and_change(document: dict[str, Any]) -> dict[str, Any]:
            nonlocal claimed
            # Decided on the version the write is conditioned on (its CAS): a retry decides again.
            claimed = self._inbox.claim(document, event)
            if not claimed:
                return document
            return with_cart(document, change(from_document(user_id, document)))

        await self._change(user_id, claim_and_change)
        return claimed

    async def check(self) -> None:
        report = await self._bucket.ping(PingOptions(service_types=[ServiceType.KeyValue]))
        states = [ep.state for eps in report.endpoints.values() for ep in eps]
        if not states or any(state is not PingState.OK for state in states):
            raise CartStoreUnavailable(f"Couchbase key-value service not ready: {states}")

    async def close(self) -> None:
        await self._cluster.close()

    async def _read(self, user_id: str) -> tuple[dict[str, Any], int | None]:
        async with _reachable():
            try:
                result = await self._collection.get(self.key(user_id))
            except DocumentNotFoundException:
                return new_document(user_id), None
        return result.content_as[dict], result.cas

    async def _apply(self, user_id: str, change: Callable[[Cart], Cart]) -> Cart:
        """Applies a change of the cart; the rest of the document (its inbox) is kept."""
        written = await self._change(
            user_id, lambda document: with_cart(document, change(from_document(user_id, document)))
        )
        return from_document(user_id, written)

    async def _change(
        self, user_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Applies `change` to the cart's document atomically; returns the document written (or
        the one read, when the change left it as it was: nothing is written then)."""
        for attempt in range(MAX_CAS_ATTEMPTS):
            document, cas = await self._read(user_id)
            changed = change(copy.deepcopy(document))
            if changed == document:
                return document
            try:
                async with _reachable():
                    if cas is None:
                        await self._collection.insert(
                            self.key(user_id), changed, InsertOptions(expiry=self._expiry)
                        )
                    else:
                        await self._collection.replace(
                            self.key(user_id),
                            changed,
                            ReplaceOptions(cas=cas, expiry=self._expiry),
                        )
                return changed
            except (CasMismatchException, DocumentExistsException, DocumentNotFoundException):
                # Full jitter keeps many writers of one cart from retrying in lockstep.
                ceiling = min(_MAX_BACKOFF_SECONDS, 0.001 * 2**attempt)
                await asyncio.sleep(random.uniform(0, ceiling))
        raise Unavailable(f"the cart of user {user_id} kept changing; try again")


@asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    try:
        yield
    except _UNREACHABLE as error:
        raise Unavailable(f"the cart store is unreachable: {error}") from error
