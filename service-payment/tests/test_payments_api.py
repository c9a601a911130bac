"""GetPayment over real gRPC: the buyer or an admin reads a payment; anyone else, an unknown order
or an order whose payment is not known yet is NOT_FOUND; a malformed id names `order_id`."""

from __future__ import annotations

import uuid

import asyncpg
import grpc

from chassis.errors import field_of
from chassis.messaging import Broker
from chassis.testing.events import EventTap
from ecommerce.events.v1 import events_pb2
from ecommerce.payment.v1 import payment_pb2, payment_pb2_grpc

from .conftest import AUTHORITY
from .support import rpc_error
from .test_saga import created, handled, reserved, settled


def get(order_id: str) -> payment_pb2.GetPaymentRequest:
    return payment_pb2.GetPaymentRequest(order_id=order_id)


async def test_the_buyer_and_an_admin_read_the_payment(
    broker: Broker,
    payments_db: asyncpg.Pool,
    tap: EventTap,
    payments: payment_pb2_grpc.PaymentServiceStub,
    user: str,
    order_id: str,
) -> None:
    await handled(broker, payments_db, created(order_id, user, total=4321))
    await handled(broker, payments_db, reserved(order_id))
    await tap.wait_for(events_pb2.PaymentAuthorized, correlation_id=order_id)
    row = await settled(payments_db, order_id, "AUTHORIZED")

    mine = (
        await payments.GetPayment(get(order_id), metadata=AUTHORITY.metadata(user), timeout=5)
    ).payment
    admin = (
        await payments.GetPayment(
            get(order_id), metadata=AUTHORITY.metadata(str(uuid.uuid4()), role="admin"), timeout=5
        )
    ).payment

    assert mine == admin
    assert (mine.order_id, mine.user_id) == (order_id, user)
    assert mine.state == payment_pb2.PAYMENT_STATE_AUTHORIZED
    assert (mine.amount_cents, mine.currency, mine.provider_attempts) == (4321, "EUR", 1)
    assert mine.decline_reason == ""
    assert mine.created_at.ToDatetime().timestamp() == row["created_at"].timestamp()
    assert mine.updated_at.ToDatetime().timestamp() == row["updated_at"].timestamp()


async def test_another_user_an_unknown_order_and_an_unknown_intent_are_not_found(
    broker: Broker,
    payments_db: asyncpg.Pool,
    payments: payment_pb2_grpc.PaymentServiceStub,
    user: str,
    order_id: str,
) -> None:
    await handled(broker, payments_db, created(order_id, user))
    early = str(uuid.uuid4())
    await handled(broker, payments_db, reserved(early))  # a row, but no intent yet

    for target, caller in ((order_id, str(uuid.uuid4())), (str(uuid.uuid4()), user), (early, user)):
        error = await rpc_error(
            payments.GetPayment(get(target), metadata=AUTHORITY.metadata(caller), timeout=5)
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert field_of(error) == "order_id"


async def test_a_malformed_order_id_is_invalid_argument_naming_it(
    payments: payment_pb2_grpc.PaymentServiceStub, user: str
) -> None:
    error = await rpc_error(
        payments.GetPayment(get("not-a-uuid"), metadata=AUTHORITY.metadata(user), timeout=5)
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(error) == "order_id"


async def test_no_token_is_unauthenticated(
    payments: payment_pb2_grpc.PaymentServiceStub, order_id: str
) -> None:
    error = await rpc_error(payments.GetPayment(get(order_id), timeout=5))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
