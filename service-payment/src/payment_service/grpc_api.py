"""PaymentServicer: the thin gRPC entrypoint. GetPayment answers the buyer (the token's user) or
an admin; domain errors raised below become gRPC status in the chassis server interceptor."""

from __future__ import annotations

import grpc

from chassis.auth import TokenVerifier, authenticate
from ecommerce.payment.v1 import payment_pb2, payment_pb2_grpc
from payment_service import handlers
from payment_service.domain import parse_id
from payment_service.proto_mapping import payment_to_proto
from payment_service.store import PaymentStore

SERVICE_NAME = payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    """Another user's payment is NOT_FOUND, never revealed to exist."""

    def __init__(self, store: PaymentStore, verifier: TokenVerifier) -> None:
        self._store = store
        self._verifier = verifier

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: grpc.aio.ServicerContext
    ) -> payment_pb2.GetPaymentResponse:
        caller = await authenticate(context, self._verifier)
        order_id = parse_id(request.order_id, field="order_id")
        payment = await handlers.get_payment(self._store, caller=caller, order_id=order_id)
        return payment_pb2.GetPaymentResponse(payment=payment_to_proto(payment))
