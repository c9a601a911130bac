"""Zero trust on the internal port: reaching service-product gives nothing a token would not.
Reads are public; CreateProduct and UpdateProduct need a verified admin token in the metadata.
Prices are capped so that no total can overflow, and names cannot disguise themselves."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from chassis.errors import field_of
from chassis.testing.tokens import TokenAuthority
from chassis.validation import MAX_PRICE_CENTS
from ecommerce.product.v1 import product_pb2, product_pb2_grpc

Stub = product_pb2_grpc.ProductServiceStub
MakeProduct = Callable[..., Awaitable[product_pb2.Product]]


@pytest.fixture
async def bare(service: Any) -> AsyncIterator[Stub]:
    """A stub whose calls carry only the metadata each test gives (no token by default)."""
    async with grpc.aio.insecure_channel(service.address) as channel:
        yield product_pb2_grpc.ProductServiceStub(channel)


def new_product(**fields: Any) -> product_pb2.CreateProductRequest:
    unique = uuid.uuid4().hex[:12]
    values: dict[str, Any] = {
        "sku": f"SKU-{unique}",
        "name": f"Back door lamp {unique}",
        "price_cents": 100,
        "stock": 1,
        **fields,
    }
    return product_pb2.CreateProductRequest(**values)


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code()


def forged_admin() -> tuple[tuple[str, str], ...]:
    return TokenAuthority().metadata(role="admin")  # the right shape, signed by another key


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (lambda authority: (), grpc.StatusCode.UNAUTHENTICATED),
        (lambda authority: forged_admin(), grpc.StatusCode.UNAUTHENTICATED),
        (lambda authority: authority.metadata(), grpc.StatusCode.PERMISSION_DENIED),
    ],
    ids=["no-token", "forged-admin-token", "customer-token"],
)
async def test_creating_a_product_needs_a_verified_admin_token(
    bare: Stub,
    authority: TokenAuthority,
    metadata: Callable[[TokenAuthority], tuple[tuple[str, str], ...]],
    expected: grpc.StatusCode,
) -> None:
    request = new_product()
    assert await code_of(bare.CreateProduct(request, metadata=metadata(authority))) == expected
    listed = await bare.ListProducts(product_pb2.ListProductsRequest(query=request.name))
    assert list(listed.products) == []


async def test_updating_a_product_needs_a_verified_admin_token(
    bare: Stub, authority: TokenAuthority, make_product: MakeProduct
) -> None:
    product = await make_product(price_cents=500)
    cheaper = product_pb2.UpdateProductRequest(id=product.id, price_cents=1)
    unauthenticated = await code_of(bare.UpdateProduct(cheaper))
    denied = await code_of(bare.UpdateProduct(cheaper, metadata=authority.metadata()))
    assert (unauthenticated, denied) == (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    )
    reply = await bare.GetProduct(product_pb2.GetProductRequest(id=product.id))
    assert reply.product.price_cents == 500
    admin = authority.metadata(role="admin")
    updated = await bare.UpdateProduct(cheaper, metadata=admin)
    assert updated.product.price_cents == 1


async def test_reads_need_no_token(bare: Stub, make_product: MakeProduct) -> None:
    product = await make_product()
    assert (await bare.GetProduct(product_pb2.GetProductRequest(id=product.id))).product == product
    batch = await bare.BatchGetProducts(product_pb2.BatchGetProductsRequest(ids=[product.id]))
    assert list(batch.products) == [product]


@pytest.mark.parametrize("price", [MAX_PRICE_CENTS + 1, 2**62, 2**63 - 1])
async def test_a_price_that_could_overflow_a_total_is_invalid(
    stub: Stub, make_product: MakeProduct, price: int
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateProduct(new_product(price_cents=price), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(raised.value) == "price_cents"
    product = await make_product()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateProduct(
            product_pb2.UpdateProductRequest(id=product.id, price_cents=price), timeout=5
        )
    assert field_of(raised.value) == "price_cents"
    assert (await make_product(price_cents=MAX_PRICE_CENTS)).price_cents == MAX_PRICE_CENTS


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "Lamp\u202eplmaL"), ("name", "La\u200bmp"), ("sku", "SKU\x07"), ("name", "Lamp\n")],
    ids=["bidi-override", "zero-width", "control", "newline-in-name"],
)
async def test_names_that_disguise_themselves_are_invalid(
    stub: Stub, field: str, value: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateProduct(new_product(**{field: value}), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(raised.value) == field


async def test_a_description_keeps_its_line_breaks(make_product: MakeProduct) -> None:
    product = await make_product(description="Warm light.\nSolid walnut base.")
    assert product.description == "Warm light.\nSolid walnut base."
