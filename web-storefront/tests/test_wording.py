"""The sentences a person reads and the form values the shop checks itself, as rules."""

from __future__ import annotations

import httpx
import pytest

from web_storefront import wording
from web_storefront.forms import price_cents, price_text, whole_number
from web_storefront.gateway import Problem, problem_of
from web_storefront.pages import safe_next
from web_storefront.settings import StorefrontSettings


def test_money_is_written_in_the_currency_of_the_shop() -> None:
    assert wording.money(123456, "USD") == "$1,234.56"
    assert wording.money(950, "EUR") == "€9.50"
    assert wording.money(500, "JPY") == "¥500"


def test_every_cancel_reason_is_said_in_words() -> None:
    assert wording.cancel_reason("PAYMENT_DECLINED") == (
        "Your payment was declined. Nothing was charged."
    )
    for reason in ("OUT_OF_STOCK", "USER_CANCELLED", "TIMEOUT"):
        assert wording.cancel_reason(reason).endswith(".")
    assert wording.cancel_reason(None) == ""
    assert wording.payment_status(None) == ""
    assert wording.payment_status("DECLINED") == "Payment declined"


def test_a_stock_refusal_names_the_units_left_and_never_the_product_id() -> None:
    detail = (
        "the line for product 0b6f3c1e-0000-4000-8000-000000000000 would hold 7 units;"
        " only 3 are in stock"
    )
    said = wording.cart_problem(Problem(409, detail))
    assert said == "Only 3 in stock: your cart would hold 7."
    assert wording.cart_problem(Problem(409, detail.replace("only 3", "only 0"))) == (
        "Sorry, this product is out of stock."
    )


@pytest.mark.parametrize(
    ("retry_after", "said"),
    [
        (None, "Please wait a few minutes before trying again."),
        (0, "Please try again in 1 second."),
        (30, "Please try again in 30 seconds."),
        (89, "Please try again in 89 seconds."),
        (90, "Please try again in 2 minutes."),
        (121, "Please try again in 3 minutes."),  # rounded up: never sooner than said
        (900, "Please try again in 15 minutes."),
    ],
)
def test_a_throttled_login_says_when_to_try_again(retry_after: int | None, said: str) -> None:
    sentence = wording.login_problem(Problem(429, "too many", retry_after=retry_after))
    assert sentence.startswith("Too many attempts to sign in")
    assert sentence.endswith(said)


def test_a_problem_is_read_from_problem_json_with_its_fields_and_retry_after() -> None:
    response = httpx.Response(
        422,
        headers={"retry-after": "12"},
        json={
            "status": 422,
            "detail": "request validation failed",
            "errors": [
                {"field": "password", "message": "String should have at least 8 characters"}
            ],
        },
    )
    problem = problem_of(response)
    assert problem.errors == {"password": "String should have at least 8 characters"}
    assert problem.retry_after == 12
    assert wording.field_errors(problem) == {
        "password": "String should have at least 8 characters."
    }
    assert problem_of(httpx.Response(404, text="<html>")).detail == ""


def test_quantities_and_prices_are_checked_before_any_request() -> None:
    assert whole_number(" 3 ", low=1, high=100) == 3
    assert whole_number("0", low=1, high=100) is None
    assert whole_number("two", low=1, high=100) is None
    assert price_cents("12.50", "USD") == 1250
    assert price_cents("1,234", "USD") == 123400
    assert price_cents("12.505", "USD") is None
    assert price_cents("500", "JPY") == 500
    assert price_cents("5.5", "JPY") is None
    for bad in ("", "-1", "0", "NaN", "Infinity", "abc"):
        assert price_cents(bad, "USD") is None
    assert price_text(1250, "USD") == "12.50"


def test_after_login_only_a_path_of_this_shop_is_followed() -> None:
    assert safe_next("/cart") == "/cart"
    for elsewhere in ("https://evil.example", "//evil.example", "/\\evil.example", "", None):
        assert safe_next(elsewhere) == "/"


def test_settings_refuse_a_trusted_proxy_that_is_no_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STOREFRONT_TRUSTED_PROXIES", "10.0.0.0/8, edge-proxy")
    with pytest.raises(ValueError, match="'edge-proxy' is not an IP address"):
        StorefrontSettings()
    monkeypatch.setenv("STOREFRONT_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1")
    assert StorefrontSettings().trusted_proxy_list == ["10.0.0.0/8", "127.0.0.1"]


@pytest.mark.parametrize(
    ("detail", "said"),
    [
        ("the cart is empty", "Your cart is empty: there is nothing to order."),
        (
            "everything in the cart is in order 0b8e, already confirmed: its lines leave the cart"
            " in a moment",
            "Everything in your cart is already ordered and confirmed: see your orders.",
        ),
    ],
)
def test_a_refused_checkout_says_why_in_words(detail: str, said: str) -> None:
    assert wording.checkout_problem(Problem(409, detail)) == said
