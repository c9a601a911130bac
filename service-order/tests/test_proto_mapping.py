"""The order status, cancel reason and payment status have one source, the protos: every value of
each proto enum translates to the domain and back, and an unknown value is an error, never a
default. A value added to a proto enum without its domain counterpart fails here."""

from __future__ import annotations

import pytest

from chassis.proto_enums import UnknownEnumValue
from ecommerce.events.v1 import events_pb2
from ecommerce.order.v1 import order_pb2
from order_service import proto_mapping
from order_service.domain import CancelReason, OrderStatus, PaymentStatus


def test_every_proto_order_status_is_a_domain_status_and_back() -> None:
    for number in order_pb2.OrderStatus.values():
        if number == order_pb2.ORDER_STATUS_UNSPECIFIED:
            continue
        status = OrderStatus(proto_mapping.STATUS.name(number))
        assert proto_mapping.status_to_proto(status) == number
    assert len(OrderStatus) == len(order_pb2.OrderStatus.values()) - 1


def test_every_proto_cancel_reason_is_a_domain_reason_and_back() -> None:
    for number in order_pb2.CancelReason.values():
        if number == order_pb2.CANCEL_REASON_UNSPECIFIED:
            assert proto_mapping.cancel_reason_to_proto(None) == number
            continue
        reason = CancelReason(proto_mapping.CANCEL_REASON.name(number))
        assert proto_mapping.cancel_reason_to_proto(reason) == number
    assert len(CancelReason) == len(order_pb2.CancelReason.values()) - 1


def test_every_cancel_reason_the_events_carry_is_a_domain_reason() -> None:
    for number in events_pb2.OrderCancelReason.values():
        if number == events_pb2.ORDER_CANCEL_REASON_UNSPECIFIED:
            continue
        reason = CancelReason(proto_mapping.EVENT_CANCEL_REASON.name(number))
        assert proto_mapping.event_cancel_reason(reason) == number


def test_every_proto_payment_status_is_a_domain_status_and_back() -> None:
    for number in order_pb2.PaymentStatus.values():
        if number == order_pb2.PAYMENT_STATUS_UNSPECIFIED:
            # An order of saga version 1 has no payment.
            assert proto_mapping.payment_status_to_proto(None) == number
            continue
        status = PaymentStatus(proto_mapping.PAYMENT_STATUS.name(number))
        assert proto_mapping.payment_status_to_proto(status) == number
    assert len(PaymentStatus) == len(order_pb2.PaymentStatus.values()) - 1


def test_the_events_cancel_reason_holds_the_order_apis_names_and_numbers() -> None:
    api = proto_mapping.CANCEL_REASON
    events = proto_mapping.EVENT_CANCEL_REASON

    assert events.names == api.names
    assert [events.number(name) for name in events.names] == [
        api.number(name) for name in api.names
    ]


@pytest.mark.parametrize("number", [0, 99])
def test_a_status_the_protos_do_not_hold_is_an_error(number: int) -> None:
    with pytest.raises(UnknownEnumValue, match=r"ecommerce\.order\.v1\.OrderStatus"):
        proto_mapping.STATUS.name(number)


@pytest.mark.parametrize("number", [0, 99])
def test_a_payment_status_the_protos_do_not_hold_is_an_error(number: int) -> None:
    with pytest.raises(UnknownEnumValue, match=r"ecommerce\.order\.v1\.PaymentStatus"):
        proto_mapping.PAYMENT_STATUS.name(number)
