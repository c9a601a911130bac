"""gRPC channels to the upstream services: created once, shared by every request.

Each channel comes from the chassis factory (keepalive, tracing, client metrics, a default
deadline, retries of idempotent reads on UNAVAILABLE); every call made through `Upstreams`
carries the configured deadline.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from api_gateway.config import GatewaySettings
from chassis.grpc_client import create_channel, full_method_names
from ecommerce.cart.v1 import cart_pb2, cart_pb2_grpc
from ecommerce.order.v1 import order_pb2, order_pb2_grpc
from ecommerce.product.v1 import product_pb2, product_pb2_grpc
from ecommerce.user.v1 import user_pb2, user_pb2_grpc

# Reads that may be retried on UNAVAILABLE (the request never reached a server that acted on it).
IDEMPOTENT_READS: dict[str, list[str]] = {
    "service-user": full_method_names(
        user_pb2.DESCRIPTOR.services_by_name["UserService"], "GetUser", "GetJwks"
    ),
    "service-product": full_method_names(
        product_pb2.DESCRIPTOR.services_by_name["ProductService"],
        "GetProduct",
        "BatchGetProducts",
        "ListProducts",
    ),
    "service-cart": full_method_names(
        cart_pb2.DESCRIPTOR.services_by_name["CartService"], "GetCart"
    ),
    # Not Checkout: a retried checkout without an idempotency key would be a second order.
    "service-order": full_method_names(
        order_pb2.DESCRIPTOR.services_by_name["OrderService"], "GetOrder", "ListOrders"
    ),
}


# Health Checks of one upstream per readiness probe, sent together: round_robin sends each to
# the next replica.
HEALTH_CHECKS_PER_UPSTREAM = 2


class UpstreamNotConfigured(Exception):
    """The route needs an upstream whose address is empty in the settings (-> 503)."""


@dataclass
class Upstreams:
    """Channels and stubs for service-user, service-product, service-cart and service-order."""

    timeout: float
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _users: user_pb2_grpc.UserServiceStub | None = None
    _products: product_pb2_grpc.ProductServiceStub | None = None
    _carts: cart_pb2_grpc.CartServiceStub | None = None
    _orders: order_pb2_grpc.OrderServiceStub | None = None

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Upstreams:
        upstreams = cls(timeout=settings.rpc_timeout_seconds)
        addresses = {
            "service-user": settings.user_service_addr,
            "service-product": settings.product_service_addr,
            "service-cart": settings.cart_service_addr,
            "service-order": settings.order_service_addr,
        }
        for name, address in addresses.items():
            if address.strip():
                upstreams.channels[name] = create_channel(
                    address.strip(),
                    default_timeout=settings.rpc_timeout_seconds,
                    idempotent_methods=IDEMPOTENT_READS.get(name, ()),
                )
        if channel := upstreams.channels.get("service-user"):
            upstreams._users = user_pb2_grpc.UserServiceStub(channel)
        if channel := upstreams.channels.get("service-product"):
            upstreams._products = product_pb2_grpc.ProductServiceStub(channel)
        if channel := upstreams.channels.get("service-cart"):
            upstreams._carts = cart_pb2_grpc.CartServiceStub(channel)
        if channel := upstreams.channels.get("service-order"):
            upstreams._orders = order_pb2_grpc.OrderServiceStub(channel)
        return upstreams

    @property
    def users(self) -> user_pb2_grpc.UserServiceStub:
        if self._users is None:
            raise UpstreamNotConfigured("service-user")
        return self._users

    @property
    def products(self) -> product_pb2_grpc.ProductServiceStub:
        if self._products is None:
            raise UpstreamNotConfigured("service-product")
        return self._products

    @property
    def carts(self) -> cart_pb2_grpc.CartServiceStub:
        if self._carts is None:
            raise UpstreamNotConfigured("service-cart")
        return self._carts

    @property
    def orders(self) -> order_pb2_grpc.OrderServiceStub:
        if self._orders is None:
            raise UpstreamNotConfigured("service-order")
        return self._orders

    async def not_serving(self, deadline_seconds: float) -> list[str]:
        """Names of the configured upstreams whose gRPC health is not SERVING in time."""
        names = list(self.channels)
        results = await asyncio.gather(
            *(self._serving(self.channels[name], deadline_seconds) for name in names)
        )
        return [name for name, serving in zip(names, results, strict=True) if not serving]

    @staticmethod
    async def _serving(channel: grpc.aio.Channel, deadline_seconds: float) -> bool:
        """SERVING when a replica of the upstream says so within the deadline. The channel
        balances round_robin, so Checks sent together go to different replicas, and the first
        SERVING answers: one replica draining (NOT_SERVING from its SIGTERM on), just restarted
        and slow to answer, or SIGKILLed under the Check, does not make the gateway unready
        while its sibling serves. (Checks one after the other let a slow newcomer use up the
        whole deadline: on a saturated machine both gateways then left haproxy's rotation at
        once, "no server available", in the replicas' test.) With one replica every Check
        reaches it, and a draining or stopped upstream still makes the gateway unready."""
        stub = health_pb2_grpc.HealthStub(channel)

        async def check() -> bool:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=deadline_seconds)
            except grpc.aio.AioRpcError:
                return False
            serving: bool = reply.status == health_pb2.HealthCheckResponse.SERVING
            return serving

        pending = {asyncio.ensure_future(check()) for _ in range(HEALTH_CHECKS_PER_UPSTREAM)}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(task.result() for task in done):
                    return True
            return False
        finally:
            for task in pending:
                task.cancel()

    async def close(self) -> None:
        await asyncio.gather(*(channel.close(grace=1.0) for channel in self.channels.values()))
