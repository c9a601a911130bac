"""The ProductService contract over a real socket: create, get, batch get, partial update, and a
clear INVALID_ARGUMENT naming the field for every bad input."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest

from chassis.errors import field_of
from chassis.testing.process import free_port
from ecommerce.product.v1 import product_pb2, product_pb2_grpc

Stub = product_pb2_grpc.ProductServiceStub
MakeProduct = Callable[..., Awaitable[product_pb2.Product]]


async def test_created_product_is_returned_by_get_with_usd_by_default(
    stub: Stub, make_product: MakeProduct
) -> None:
    created = await make_product(name="Walnut Desk Lamp", price_cents=4500, stock=3)
    assert created.currency == "USD"
    assert uuid.UUID(created.id)
    fetched = (await stub.GetProduct(product_pb2.GetProductRequest(id=created.id))).product
    assert fetched == created
    assert (fetched.name, fetched.price_cents, fetched.stock) == ("Walnut Desk Lamp", 4500, 3)


async def test_currency_is_kept_when_given(stub: Stub, make_product: MakeProduct) -> None:
    created = await make_product(currency="EUR")
    assert created.currency == "EUR"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price_cents", 0),
        ("price_cents", -5),
        ("stock", -1),
        ("name", ""),
        ("name", "   "),
        ("name", "n" * 201),
        ("sku", ""),
        ("sku", "S" * 65),
        ("currency", "usd"),
        ("currency", "US"),
        ("currency", "EURO"),
        ("currency", "U$D"),
        ("description", "d" * 5001),
        ("name", "nul\x00inside"),
        ("sku", "SKU\x00"),
        ("description", "\x00"),
    ],
)
async def test_create_with_bad_field_is_invalid_argument_naming_it(
    stub: Stub, make_product: MakeProduct, field: str, value: Any
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await make_product(**{field: value})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(caught.value) == field


async def test_longest_allowed_values_are_accepted(make_product: MakeProduct) -> None:
    created = await make_product(
        sku=uuid.uuid4().hex.ljust(64, "x"), name="n" * 200, description="d" * 5000
    )
    assert (len(created.sku), len(created.name), len(created.description)) == (64, 200, 5000)


async def test_duplicate_sku_is_already_exists(stub: Stub, make_product: MakeProduct) -> None:
    sku = f"DUP-{uuid.uuid4().hex}"
    await make_product(sku=sku)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await make_product(sku=sku)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_unknown_id_is_not_found(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetProduct(product_pb2.GetProductRequest(id=str(uuid.uuid4())))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("bad_id", ["", "42", "not-a-uuid", "1234567-1234-1234-1234-123456789012"])
async def test_malformed_id_is_invalid_argument_naming_id(stub: Stub, bad_id: str) -> None:
    for call in (
        stub.GetProduct(product_pb2.GetProductRequest(id=bad_id)),
        stub.UpdateProduct(product_pb2.UpdateProductRequest(id=bad_id, stock=1)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_of(caught.value) == "id"


async def test_update_changes_only_the_fields_present(
    stub: Stub, make_product: MakeProduct
) -> None:
    created = await make_product(name="Oak Chair", price_cents=1000, stock=5)
    updated = (
        await stub.UpdateProduct(product_pb2.UpdateProductRequest(id=created.id, price_cents=1200))
    ).product
    assert (updated.name, updated.price_cents, updated.stock) == ("Oak Chair", 1200, 5)
    assert updated.description == created.description
    assert updated.updated_at.ToDatetime() >= created.updated_at.ToDatetime()


async def test_update_to_zero_stock_and_empty_description_is_applied(
    stub: Stub, make_product: MakeProduct
) -> None:
    # Zero and "" are the proto3 defaults: only field presence tells "set to 0" from "unset".
    created = await make_product(stock=5, description="something")
    updated = (
        await stub.UpdateProduct(
            product_pb2.UpdateProductRequest(id=created.id, stock=0, description="")
        )
    ).product
    assert (updated.stock, updated.description) == (0, "")


@pytest.mark.parametrize(
    ("field", "value"),
    [("price_cents", 0), ("stock", -3), ("name", ""), ("name", "x" * 201), ("name", "a\x00b")],
)
async def test_update_with_bad_field_is_invalid_argument_naming_it(
    stub: Stub, make_product: MakeProduct, field: str, value: Any
) -> None:
    created = await make_product()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateProduct(product_pb2.UpdateProductRequest(id=created.id, **{field: value}))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(caught.value) == field
    fetched = (await stub.GetProduct(product_pb2.GetProductRequest(id=created.id))).product
    assert fetched == created


async def test_update_of_unknown_product_is_not_found(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateProduct(product_pb2.UpdateProductRequest(id=str(uuid.uuid4()), stock=1))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_batch_get_keeps_first_asked_order_dedupes_and_lists_missing(
    stub: Stub, make_product: MakeProduct
) -> None:
    a, b, c = [await make_product() for _ in range(3)]
    unknown = str(uuid.uuid4())
    response = await stub.BatchGetProducts(
        product_pb2.BatchGetProductsRequest(ids=[c.id, a.id, unknown, c.id, b.id, unknown])
    )
    assert [p.id for p in response.products] == [c.id, a.id, b.id]
    assert list(response.missing_ids) == [unknown]


async def test_batch_get_of_nothing_is_empty(stub: Stub) -> None:
    response = await stub.BatchGetProducts(product_pb2.BatchGetProductsRequest(ids=[]))
    assert (list(response.products), list(response.missing_ids)) == ([], [])


async def test_batch_get_of_more_than_100_ids_is_invalid_argument(stub: Stub) -> None:
    ids = [str(uuid.uuid4()) for _ in range(101)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchGetProducts(product_pb2.BatchGetProductsRequest(ids=ids))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(caught.value) == "ids"


async def test_batch_get_with_a_malformed_id_is_invalid_argument(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.BatchGetProducts(
            product_pb2.BatchGetProductsRequest(ids=[str(uuid.uuid4()), "nope"])
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(caught.value) == "ids"


async def test_database_outage_is_unavailable_not_internal(
    service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_pool = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{free_port()}/products", min_size=0, timeout=2
    )
    monkeypatch.setattr(service.app.store, "_pool", dead_pool)
    try:
        for call in (
            service.stub.GetProduct(product_pb2.GetProductRequest(id=str(uuid.uuid4()))),
            service.stub.ListProducts(product_pb2.ListProductsRequest()),
            service.stub.CreateProduct(
                product_pb2.CreateProductRequest(sku="OUTAGE", name="x", price_cents=1)
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await dead_pool.close()
