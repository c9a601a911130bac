"""Specs of `ProtoEnumNames`: a protobuf enum's values by their names without the prefix, with no
default for what the enum does not hold."""

from __future__ import annotations

import pytest

from chassis.proto_enums import ProtoEnumNames, UnknownEnumValue
from ecommerce.order.v1 import order_pb2

STATUS = ProtoEnumNames(order_pb2.OrderStatus, prefix="ORDER_STATUS_")
REASON = ProtoEnumNames(order_pb2.CancelReason, prefix="CANCEL_REASON_")


def test_names_are_the_values_without_the_prefix_in_number_order() -> None:
    assert STATUS.names == ("PENDING", "CONFIRMED", "CANCELLED")
    assert STATUS.name(order_pb2.ORDER_STATUS_CONFIRMED) == "CONFIRMED"
    assert STATUS.number("CANCELLED") == order_pb2.ORDER_STATUS_CANCELLED


def test_the_zero_value_is_not_set_and_has_no_name() -> None:
    with pytest.raises(UnknownEnumValue, match="OrderStatus is not set"):
        STATUS.name(0)
    assert REASON.optional_name(0) is None
    assert REASON.optional_name(order_pb2.CANCEL_REASON_TIMEOUT) == "TIMEOUT"


def test_a_number_or_name_the_enum_does_not_hold_is_an_error() -> None:
    with pytest.raises(UnknownEnumValue, match="has no value 42"):
        STATUS.name(42)
    with pytest.raises(UnknownEnumValue, match="has no value 42"):
        REASON.optional_name(42)
    with pytest.raises(UnknownEnumValue, match="no value named 'UNSPECIFIED'"):
        STATUS.number("UNSPECIFIED")


def test_a_prefix_some_value_lacks_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="ORDER_STATUS_PENDING does not start with 'STATUS_'"):
        ProtoEnumNames(order_pb2.OrderStatus, prefix="STATUS_")
