"""GetOrder, ListOrders and CancelOrder over real gRPC, and who may call them: only the user
whose verified token the call carries, and another user's order does not exist for them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from chassis.errors import field_of
from chassis.testing.tokens import TokenAuthority
from ecommerce.events.v1 import events_pb2
from ecommerce.order.v1 import order_pb2, order_pb2_grpc

from .conftest import PAYMENT_TOKEN, Shop
from .support import rpc_error, sample


def cancel_request(user: str, order_id: str) -> order_pb2.CancelOrderRequest:
    return order_pb2.CancelOrderRequest(user_id=user, order_id=order_id)


async def placed_order(shop: Shop, user: str) -> order_pb2.Order:
    await shop.filled_cart(user, 1)
    return await shop.checkout(user)


async def test_cancelling_a_pending_order_publishes_order_cancelled_and_a_second_cancel_fails(
    shop: Shop, user: str
) -> None:
    order = await placed_order(shop, user)
    cancelled_before = sample("orders_total", status="CANCELLED", reason="USER_CANCELLED")
    sagas_before = sample("saga_duration_seconds_count", outcome="user_cancelled")

    cancelled = (await shop.orders.CancelOrder(cancel_request(user, order.id), timeout=5)).order
    second = await rpc_error(shop.orders.CancelOrder(cancel_request(user, order.id), timeout=5))

    assert cancelled.status == order_pb2.ORDER_STATUS_CANCELLED
    assert cancelled.cancel_reason == order_pb2.CANCEL_REASON_USER_CANCELLED
    assert cancelled.updated_at.ToDatetime() > order.updated_at.ToDatetime()
    assert (cancelled.items, cancelled.created_at) == (order.items, order.created_at)
    assert await shop.get_order(user, order.id) == cancelled
    assert second.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert second.details() == f"order {order.id} is already cancelled"
    [payload] = await shop.outbox(order.id, events_pb2.OrderCancelled)
    event = events_pb2.OrderCancelled.FromString(payload)
    assert (event.order_id, event.user_id) == (order.id, user)
    assert event.reason == events_pb2.ORDER_CANCEL_REASON_USER_CANCELLED
    assert not event.was_confirmed  # service-payment voids, nothing was captured
    assert event.occurred_at == cancelled.updated_at
    assert cancelled.payment_status == order_pb2.PAYMENT_STATUS_PENDING
    assert sample("orders_total", status="CANCELLED", reason="USER_CANCELLED") == (
        cancelled_before + 1
    )
    assert sample("saga_duration_seconds_count", outcome="user_cancelled") == sagas_before + 1


async def test_a_confirmed_order_can_be_cancelled_once_and_the_saga_is_not_timed_again(
    shop: Shop, user: str
) -> None:
    order = await placed_order(shop, user)
    await shop.orders_db.execute(
        "UPDATE orders SET status = 'CONFIRMED', payment_status = 'AUTHORIZED' WHERE id = $1",
        uuid.UUID(order.id),
    )
    sagas_before = sample("saga_duration_seconds_count", outcome="user_cancelled")

    cancelled = (await shop.orders.CancelOrder(cancel_request(user, order.id), timeout=5)).order

    assert cancelled.status == order_pb2.ORDER_STATUS_CANCELLED
    assert cancelled.cancel_reason == order_pb2.CANCEL_REASON_USER_CANCELLED
    # The payment stays AUTHORIZED until service-payment reports the refund.
    assert cancelled.payment_status == order_pb2.PAYMENT_STATUS_AUTHORIZED
    [payload] = await shop.outbox(order.id, events_pb2.OrderCancelled)
    assert events_pb2.OrderCancelled.FromString(payload).was_confirmed
    # The saga ended at CONFIRMED: cancelling afterwards is no saga outcome.
    assert sample("saga_duration_seconds_count", outcome="user_cancelled") == sagas_before


async def test_listing_pages_through_the_user_s_orders_newest_first(shop: Shop, user: str) -> None:
    placed = []
    for _ in range(5):  # each checkout orders what was added since the one before
        await shop.filled_cart(user, 1)
        placed.append(await shop.checkout(user))
    other_user = str(uuid.uuid4())
    await placed_order(shop, other_user)

    pages, token = [], ""
    while True:
        request = order_pb2.ListOrdersRequest(user_id=user, page_size=2, page_token=token)
        reply = await shop.orders.ListOrders(request, timeout=5)
        pages.append([order.id for order in reply.orders])
        token = reply.next_page_token
        if not token:
            break
    everything = await shop.orders.ListOrders(order_pb2.ListOrdersRequest(user_id=user), timeout=5)

    newest_first = [order.id for order in reversed(placed)]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]
    assert list(everything.orders) == list(reversed(placed))
    assert {order.payment_status for order in everything.orders} == {
        order_pb2.PAYMENT_STATUS_PENDING
    }
    assert everything.next_page_token == ""


async def test_a_bad_page_token_or_size_is_an_invalid_argument_naming_it(
    shop: Shop, user: str
) -> None:
    for _ in range(2):
        await shop.filled_cart(user, 1)
        await shop.checkout(user)
    first = await shop.orders.ListOrders(
        order_pb2.ListOrdersRequest(user_id=user, page_size=1), timeout=5
    )
    token = first.next_page_token
    edited = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    someone_else = str(uuid.uuid4())

    cases = [
        (order_pb2.ListOrdersRequest(user_id=user, page_token="not a token"), "page_token"),
        (order_pb2.ListOrdersRequest(user_id=user, page_token=edited), "page_token"),
        (order_pb2.ListOrdersRequest(user_id=someone_else, page_token=token), "page_token"),
        (order_pb2.ListOrdersRequest(user_id=user, page_size=101), "page_size"),
        (order_pb2.ListOrdersRequest(user_id=user, page_size=-1), "page_size"),
    ]
    for request, field in cases:
        error = await rpc_error(shop.orders.ListOrders(request, timeout=5))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert field_of(error) == field, request


async def test_another_user_s_order_does_not_exist_for_them(shop: Shop, user: str) -> None:
    order = await placed_order(shop, user)
    stranger = str(uuid.uuid4())

    read = await rpc_error(shop.get_order(stranger, order.id))
    cancel = await rpc_error(shop.orders.CancelOrder(cancel_request(stranger, order.id), timeout=5))
    unknown = await rpc_error(shop.get_order(user, str(uuid.uuid4())))
    listed = await shop.orders.ListOrders(order_pb2.ListOrdersRequest(user_id=stranger), timeout=5)

    assert read.code() == cancel.code() == unknown.code() == grpc.StatusCode.NOT_FOUND
    assert read.details() == f"order {order.id} does not exist"
    assert list(listed.orders) == []
    assert (await shop.get_order(user, order.id)).status == order_pb2.ORDER_STATUS_PENDING


async def test_malformed_ids_are_invalid_arguments_naming_the_field(shop: Shop, user: str) -> None:
    cases = [
        (shop.orders.GetOrder(order_pb2.GetOrderRequest(user_id=user, order_id="42")), "order_id"),
        (shop.orders.CancelOrder(cancel_request(user, "nope")), "order_id"),
        (shop.orders.ListOrders(order_pb2.ListOrdersRequest(user_id="me")), "user_id"),
        (shop.orders.Checkout(order_pb2.CheckoutRequest(user_id="")), "user_id"),
    ]
    for call, field in cases:
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_of(error) == field


@pytest.fixture
async def bare(shop: Shop) -> AsyncIterator[order_pb2_grpc.OrderServiceStub]:
    """A stub whose calls carry only the metadata each test gives."""
    async with grpc.aio.insecure_channel(shop.order_address) as channel:
        yield order_pb2_grpc.OrderServiceStub(channel)


def every_rpc(
    stub: order_pb2_grpc.OrderServiceStub, user: str, order_id: str
) -> list[tuple[str, object, object]]:
    return [
        (
            "Checkout",
            stub.Checkout,
            order_pb2.CheckoutRequest(user_id=user, payment_token=PAYMENT_TOKEN),
        ),
        ("GetOrder", stub.GetOrder, order_pb2.GetOrderRequest(user_id=user, order_id=order_id)),
        ("ListOrders", stub.ListOrders, order_pb2.ListOrdersRequest(user_id=user)),
        ("CancelOrder", stub.CancelOrder, cancel_request(user, order_id)),
    ]


async def test_a_token_acts_only_for_its_own_user_on_every_rpc(
    shop: Shop, bare: order_pb2_grpc.OrderServiceStub, authority: TokenAuthority, user: str
) -> None:
    order = await placed_order(shop, user)
    for role in ("customer", "admin"):
        metadata = authority.metadata(str(uuid.uuid4()), role=role)
        for name, method, request in every_rpc(bare, user, order.id):
            error = await rpc_error(method(request, metadata=metadata, timeout=5))  # type: ignore[operator]
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (name, role)
    assert (await shop.get_order(user, order.id)).status == order_pb2.ORDER_STATUS_PENDING


async def test_every_rpc_needs_a_valid_token(
    shop: Shop, bare: order_pb2_grpc.OrderServiceStub, authority: TokenAuthority, user: str
) -> None:
    order = await placed_order(shop, user)
    forged = TokenAuthority().metadata(user)
    expired = (("authorization", f"Bearer {authority.token(user, ttl_seconds=-60)}"),)
    for metadata in ((), forged, expired, (("authorization", "Basic dXNlcjpwYXNz"),)):
        for name, method, request in every_rpc(bare, user, order.id):
            error = await rpc_error(method(request, metadata=metadata, timeout=5))  # type: ignore[operator]
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (name, metadata)
    assert (await shop.get_order(user, order.id)).status == order_pb2.ORDER_STATUS_PENDING
