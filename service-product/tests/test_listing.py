"""ListProducts: keyset pages in (case-insensitive name, id) order, a case-insensitive substring
filter with literal wildcards, and opaque page tokens bound to their query."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid
from collections.abc import Awaitable, Callable

import grpc
import pytest

from chassis.errors import field_of
from ecommerce.product.v1 import product_pb2, product_pb2_grpc

Stub = product_pb2_grpc.ProductServiceStub
MakeProduct = Callable[..., Awaitable[product_pb2.Product]]


async def walk(stub: Stub, query: str, page_size: int) -> list[list[product_pb2.Product]]:
    """Every page of `query`, following next_page_token until it is empty."""
    pages: list[list[product_pb2.Product]] = []
    token = ""
    while True:
        response = await stub.ListProducts(
            product_pb2.ListProductsRequest(page_size=page_size, page_token=token, query=query),
            timeout=5,
        )
        pages.append(list(response.products))
        token = response.next_page_token
        if not token:
            return pages
        assert len(pages) < 1000, "page tokens never ended"


async def test_pages_cover_every_match_once_in_case_insensitive_name_order(
    make_product: MakeProduct, stub: Stub
) -> None:
    tag = uuid.uuid4().hex[:10]
    names = [f"{word} {tag}" for word in ("banana", "Apple", "cherry", "apple", "Date", "elder")]
    names += [f"Apple {tag}"]  # the same name twice: the id breaks the tie
    created = [await make_product(name=name) for name in names]

    pages = await walk(stub, tag, page_size=3)

    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [p for page in pages for p in page]
    expected = sorted(created, key=lambda p: (p.name.lower(), uuid.UUID(p.id)))
    assert [p.id for p in listed] == [p.id for p in expected]


async def test_exact_multiple_of_page_size_ends_without_an_empty_page(
    make_product: MakeProduct, stub: Stub
) -> None:
    tag = uuid.uuid4().hex[:10]
    for i in range(4):
        await make_product(name=f"Lamp {i} {tag}")
    pages = await walk(stub, tag, page_size=2)
    assert [len(page) for page in pages] == [2, 2]


async def test_page_size_zero_gives_twenty(make_product: MakeProduct, stub: Stub) -> None:
    tag = uuid.uuid4().hex[:10]
    for i in range(21):
        await make_product(name=f"Mug {i:02d} {tag}")
    response = await stub.ListProducts(product_pb2.ListProductsRequest(query=tag))
    assert len(response.products) == 20
    assert response.next_page_token


async def test_query_is_a_case_insensitive_substring_of_the_name(
    make_product: MakeProduct, stub: Stub
) -> None:
    tag = uuid.uuid4().hex[:10]
    red = await make_product(name=f"Big RED Mug {tag}")
    await make_product(name=f"Blue Mug {tag}")
    response = await stub.ListProducts(product_pb2.ListProductsRequest(query=f"red mug {tag}"))
    assert [p.id for p in response.products] == [red.id]


@pytest.mark.parametrize("wildcard", ["%", "_", "\\"])
async def test_like_wildcards_in_query_match_only_themselves(
    make_product: MakeProduct, stub: Stub, wildcard: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    literal = await make_product(name=f"{tag} 50{wildcard}off")
    await make_product(name=f"{tag} 50Xoff")
    response = await stub.ListProducts(
        product_pb2.ListProductsRequest(query=f"{tag} 50{wildcard}off")
    )
    assert [p.id for p in response.products] == [literal.id]


@pytest.mark.parametrize("page_size", [-1, 101])
async def test_page_size_outside_1_to_100_is_invalid_argument(stub: Stub, page_size: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListProducts(product_pb2.ListProductsRequest(page_size=page_size))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(caught.value) == "page_size"


@pytest.mark.parametrize("token", ["garbage", "%%%", "eyJ2IjoxfQ"])
async def test_garbage_page_token_is_invalid_argument(stub: Stub, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListProducts(product_pb2.ListProductsRequest(page_token=token))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(caught.value) == "page_token"


async def test_page_token_used_with_another_query_is_invalid_argument(
    make_product: MakeProduct, stub: Stub
) -> None:
    tag = uuid.uuid4().hex[:10]
    for i in range(3):
        await make_product(name=f"Pan {i} {tag}")
    first = await stub.ListProducts(product_pb2.ListProductsRequest(page_size=1, query=tag))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListProducts(
            product_pb2.ListProductsRequest(page_token=first.next_page_token, query="other")
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(caught.value) == "page_token"


async def test_walking_pages_while_products_are_inserted_never_repeats_an_id(
    make_product: MakeProduct, stub: Stub
) -> None:
    tag = uuid.uuid4().hex[:10]
    rng = random.Random(7)

    def name() -> str:
        # Random names land before and after the walker's position, as real inserts would.
        return f"{tag} {''.join(rng.choices('abcdefghij', k=6))}"

    originals = {(await make_product(name=name())).id for _ in range(40)}
    inserting = True

    async def insert_meanwhile() -> int:
        count = 0
        while inserting:
            await make_product(name=name())
            count += 1
            await asyncio.sleep(0)
        return count

    inserter = asyncio.create_task(insert_meanwhile())
    seen: list[str] = []
    token = ""
    while True:
        response = await stub.ListProducts(
            product_pb2.ListProductsRequest(page_size=4, page_token=token, query=tag)
        )
        seen += [p.id for p in response.products]
        token = response.next_page_token
        if not token:
            break
        await make_product(name=name())  # at least one insert between every two pages
    inserting = False
    inserted = await inserter

    assert inserted > 0
    assert len(seen) == len(set(seen))
    assert originals <= set(seen)


@pytest.mark.parametrize(
    ("stored", "query"),
    [
        # Python lowers a final capital sigma to the final form, PostgreSQL to the plain one.
        ("ΚΟΣΜΟΣ Lamp", "κοσμοσ lamp"),
        ("ΚΟΣΜΟΣ Lamp", "ΚΟΣΜΟΣ"),
        # Python lowers "İ" to "i" plus a combining dot, PostgreSQL to a plain "i".
        ("İstanbul Rug", "İSTANBUL"),
    ],
)
async def test_query_folds_case_exactly_as_the_sort_key_does(
    make_product: MakeProduct, stub: Stub, stored: str, query: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    match = await make_product(name=f"{stored} {tag}")

    response = await stub.ListProducts(product_pb2.ListProductsRequest(query=query, page_size=100))

    assert match.id in [p.id for p in response.products]


@pytest.mark.parametrize("name_key", ["a\x00b", "\ud800"])
async def test_edited_page_token_with_unstorable_text_is_invalid_argument(
    stub: Stub, name_key: str
) -> None:
    payload = {"v": 1, "n": name_key, "i": str(uuid.uuid4()), "q": ""}
    token = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListProducts(product_pb2.ListProductsRequest(page_token=token))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_of(caught.value) == "page_token"
