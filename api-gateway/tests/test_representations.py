"""The REST names of the protos' enumerations: every proto value has one, the OpenAPI document lists
exactly those, and a value the protos do not hold is an error (a 500), never a default such as
PENDING. A value added to a proto enum without its place in the schema fails here."""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest

from api_gateway import representations
from api_gateway.schemas import OrderOut, UserOut
from chassis.proto_enums import UnknownEnumValue
from ecommerce.order.v1 import order_pb2
from ecommerce.user.v1 import user_pb2


def literal_names(annotation: Any) -> set[str]:
    """The strings of a `Literal[...]` annotation (or of `Literal[...] | None`)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        [annotation] = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return set(typing.get_args(annotation))


def order(**fields: Any) -> order_pb2.Order:
    return order_pb2.Order(id="1d6f6a4e-4a1b-4b0e-9c3e-8d2f5a7b9c01", **fields)


def test_every_proto_order_status_has_the_rest_name_the_schema_lists() -> None:
    names = {
        representations.order_json(order(status=number))["status"]
        for number in order_pb2.OrderStatus.values()
        if number != order_pb2.ORDER_STATUS_UNSPECIFIED
    }

    assert names == literal_names(OrderOut.model_fields["status"].annotation)
    assert "PENDING" in names


def test_every_proto_cancel_reason_has_the_rest_name_the_schema_lists() -> None:
    names = {
        representations.order_json(order(status=order_pb2.ORDER_STATUS_CANCELLED, cancel_reason=n))[
            "cancel_reason"
        ]
        for n in order_pb2.CancelReason.values()
    }

    schema = literal_names(OrderOut.model_fields["cancel_reason"].annotation)
    assert names == {*schema, None}


def test_every_proto_payment_status_has_the_rest_name_the_schema_lists() -> None:
    names = {
        representations.order_json(order(status=order_pb2.ORDER_STATUS_PENDING, payment_status=n))[
            "payment_status"
        ]
        for n in order_pb2.PaymentStatus.values()
    }

    schema = literal_names(OrderOut.model_fields["payment_status"].annotation)
    assert names == {*schema, None}
    assert "DECLINED" in names


def test_an_order_placed_before_payments_existed_has_a_null_payment_status() -> None:
    placed = order(
        status=order_pb2.ORDER_STATUS_CONFIRMED,
        payment_status=order_pb2.PAYMENT_STATUS_UNSPECIFIED,
    )

    assert representations.order_json(placed)["payment_status"] is None


def test_an_unknown_payment_status_is_an_error_never_null() -> None:
    with pytest.raises(UnknownEnumValue, match="PaymentStatus has no value 9"):
        representations.order_json(order(status=order_pb2.ORDER_STATUS_PENDING, payment_status=9))


def test_every_proto_role_has_the_rest_name_the_schema_lists() -> None:
    names = {
        representations.user_json(user_pb2.User(role=number))["role"]
        for number in user_pb2.Role.values()
        if number != user_pb2.ROLE_UNSPECIFIED
    }

    assert names == literal_names(UserOut.model_fields["role"].annotation)


@pytest.mark.parametrize(
    "status", [order_pb2.ORDER_STATUS_UNSPECIFIED, 7], ids=["unspecified", "unknown"]
)
def test_an_order_status_the_protos_do_not_hold_is_an_error_never_pending(status: int) -> None:
    with pytest.raises(UnknownEnumValue, match="OrderStatus"):
        representations.order_json(order(status=status))


def test_an_unknown_cancel_reason_is_an_error_never_null() -> None:
    with pytest.raises(UnknownEnumValue, match="CancelReason has no value 9"):
        representations.order_json(order(status=order_pb2.ORDER_STATUS_CANCELLED, cancel_reason=9))


def test_an_account_without_a_role_is_an_error_never_a_customer() -> None:
    with pytest.raises(UnknownEnumValue, match="Role is not set"):
        representations.user_json(user_pb2.User(role=user_pb2.ROLE_UNSPECIFIED))
