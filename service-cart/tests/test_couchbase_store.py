"""The Couchbase store without a cluster: it must refuse to start loudly, never hang."""

from __future__ import annotations

import asyncio

import pytest

from cart_service.couchbase_store import CouchbaseCartStore
from cart_service.settings import CouchbaseLocation
from cart_service.store import CartStoreUnavailable

from .conftest import inbox

# Port 1 on the loopback refuses every connection: an unreachable cluster.
UNREACHABLE = CouchbaseLocation(
    connstr="couchbase://127.0.0.1:1", username="cart", password="secret", bucket="carts"
)


async def test_an_unreachable_cluster_fails_with_an_error_naming_connstr_and_bucket() -> None:
    with pytest.raises(CartStoreUnavailable) as caught:
        # wait_for only turns a hang into a failure; the store's own timeout is 1 s.
        await asyncio.wait_for(
            CouchbaseCartStore.connect(UNREACHABLE, ttl_days=30, inbox=inbox(), timeout_seconds=1),
            30,
        )

    message = str(caught.value)
    assert "couchbase://127.0.0.1:1" in message
    assert "bucket 'carts'" in message
    assert "secret" not in message


def test_the_password_never_shows_in_the_location_repr() -> None:
    assert "secret" not in repr(UNREACHABLE)
