"""Unit specifications of the catalogue rules: ids, page tokens and the LIKE pattern."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from chassis.errors import InvalidArgument
from product_service.domain import (
    PageCursor,
    decode_page_token,
    encode_page_token,
    like_pattern,
    new_product,
    page_request,
    parse_ids,
    substring_pattern,
)


def _token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def test_page_token_round_trips_with_unicode_name_and_query() -> None:
    cursor = PageCursor(last_name_key="crème brûlée", last_id=uuid.uuid4(), query="brû")
    assert decode_page_token(encode_page_token(cursor), query="brû") == cursor


def test_page_token_is_url_safe() -> None:
    cursor = PageCursor(last_name_key="?" * 50 + "~~~>>>", last_id=uuid.uuid4(), query="")
    token = encode_page_token(cursor)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


# Fixed, so that every xdist worker collects the same test ids.
WELL_FORMED_ID = "7d4b8f0e-2c55-4f6e-9d0b-3c1a5e9f8a21"


@pytest.mark.parametrize(
    "token",
    [
        "not base64 !!",
        "e30",  # {}
        _token([1, 2]),
        _token({"v": 2, "n": "a", "i": WELL_FORMED_ID, "q": ""}),
        _token({"v": 1, "n": "a", "i": "not-a-uuid", "q": ""}),
        _token({"v": 1, "n": 5, "i": WELL_FORMED_ID, "q": ""}),
        _token({"v": 1, "i": WELL_FORMED_ID, "q": ""}),
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
    ],
)
def test_garbage_page_token_is_rejected_naming_page_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, query="")
    assert caught.value.field == "page_token"


def test_page_token_of_another_query_is_rejected() -> None:
    token = encode_page_token(PageCursor(last_name_key="a", last_id=uuid.uuid4(), query="mug"))
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, query="lamp")
    assert caught.value.field == "page_token"


@pytest.mark.parametrize("size", [-1, 101, 1000])
def test_page_size_outside_1_to_100_is_rejected(size: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        page_request(page_size=size, page_token="", query="")
    assert caught.value.field == "page_size"


def test_page_size_zero_means_twenty() -> None:
    assert page_request(page_size=0, page_token="", query="").size == 20


def test_like_pattern_matches_wildcards_literally() -> None:
    assert like_pattern("100%_OFF\\") == "%100\\%\\_off\\\\%"


def test_batch_ids_are_deduplicated_keeping_first_order() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    assert parse_ids([str(b), str(a), str(b)]) == [b, a]


def test_batch_of_more_than_100_ids_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_ids([str(uuid.uuid4()) for _ in range(101)])
    assert caught.value.field == "ids"


def test_empty_currency_means_usd() -> None:
    product = new_product(sku="A", name="Mug", description="", price_cents=1, currency="", stock=0)
    assert product.currency == "USD"


def test_substring_pattern_escapes_wildcards_and_leaves_case_to_postgres() -> None:
    assert substring_pattern("ΚΟΣΜΟΣ 100%_\\") == "%ΚΟΣΜΟΣ 100\\%\\_\\\\%"


@pytest.mark.parametrize("name_key", ["a\x00b", "\ud800"])
def test_page_token_with_text_postgres_cannot_hold_is_rejected(name_key: str) -> None:
    token = _token({"v": 1, "n": name_key, "i": str(uuid.uuid4()), "q": ""})
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token, query="")
    assert caught.value.field == "page_token"
