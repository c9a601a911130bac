"""What a person reads: the gateway's problems as sentences, order states and reasons in words, and
money in the shop's currency. Pages never show a raw status code, an id-laden upstream message or a
stack trace; everything they say about a failure comes from here."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from babel.numbers import format_currency, get_currency_precision

from web_storefront.gateway import GatewayUnavailable, Problem

LOCALE = "en_US"

TRY_AGAIN_SHORTLY = (
    "The shop cannot reach its stock and order systems right now. Please try again shortly."
)
SESSION_ENDED = "Your session has ended. Please log in again."

ORDER_STATUS = {
    "PENDING": "Being confirmed",
    "CONFIRMED": "Confirmed",
    "CANCELLED": "Cancelled",
}
CANCEL_REASON = {
    "OUT_OF_STOCK": "Cancelled because part of the order was out of stock. You were not charged.",
    "PAYMENT_DECLINED": "Your payment was declined. Nothing was charged.",
    "USER_CANCELLED": "You cancelled this order.",
    "TIMEOUT": "Cancelled because it could not be confirmed in time. You were not charged.",
}
PAYMENT_STATUS = {
    "PENDING": "Payment pending",
    "AUTHORIZED": "Payment authorised",
    "DECLINED": "Payment declined",
    "REFUNDED": "Payment refunded",
    "VOIDED": "Payment released, nothing charged",
}
# The simulated provider's test cards (a real provider's tokens would come from its own form).
TEST_CARDS = (
    ("pm_card_ok", "Test card: approved"),
    ("pm_card_declined", "Test card: declined"),
    ("pm_card_flaky", "Test card: approved after two provider hiccups"),
    ("pm_card_slow", "Test card: approved after a slow answer"),
)


def money(cents: int, currency: str) -> str:
    """Minor units as the currency is written: 123456 USD -> "$1,234.56", 500 JPY -> "¥500"."""
    try:
        digits = get_currency_precision(currency)
        return format_currency(Decimal(cents).scaleb(-digits), currency, locale=LOCALE)
    except (ValueError, LookupError):
        return f"{Decimal(cents).scaleb(-2):,.2f} {currency}"


def stock(units: int) -> str:
    if units <= 0:
        return "Out of stock"
    if units <= 5:
        return f"Only {units} left"
    return "In stock"


def order_status(status: str) -> str:
    return ORDER_STATUS.get(status, status.capitalize())


def cancel_reason(reason: str | None) -> str:
    if not reason:
        return ""
    return CANCEL_REASON.get(reason, "This order was cancelled.")


def payment_status(status: str | None) -> str:
    return PAYMENT_STATUS.get(status, "") if status else ""


def sentence(text: str) -> str:
    """A message as a sentence: capital first, full stop last."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _wait(seconds: int | None) -> str:
    """When to try again, from the gateway's Retry-After; never sooner than it said."""
    if seconds is None:
        return "Please wait a few minutes before trying again."
    if seconds < 90:
        return f"Please try again in {_count(max(seconds, 1), 'second')}."
    return f"Please try again in {_count(math.ceil(seconds / 60), 'minute')}."


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}" if number == 1 else f"{number} {unit}s"


_STOCK = re.compile(r"would hold (\d+) units; only (\d+) (?:is|are) in stock")
_UNIT_CAP = re.compile(r"at most (\d+) are allowed")
_LINE_CAP = re.compile(r"at most (\d+) different products")


def cart_problem(problem: Problem) -> str:
    """A refused cart change (409 limits, 404 unknown product or line, 422 quantity)."""
    if problem.status == 409:
        if match := _STOCK.search(problem.detail):
            wanted, stock = match.groups()
            if stock == "0":
                return "Sorry, this product is out of stock."
            return f"Only {stock} in stock: your cart would hold {wanted}."
        if match := _UNIT_CAP.search(problem.detail):
            return f"At most {match.group(1)} units of one product fit in a cart."
        if match := _LINE_CAP.search(problem.detail):
            return f"A cart holds at most {match.group(1)} different products."
        if "currency" in problem.detail:
            return "This product is priced in another currency than the rest of your cart."
        return "Your cart could not be changed that way."
    if problem.status == 404:
        return "That product is no longer in the catalogue or no longer in your cart."
    if problem.status == 422:
        return "Enter a quantity from 1 to 100."
    return general_problem(problem)


def checkout_problem(problem: Problem) -> str:
    if problem.status == 409:
        if "empty" in problem.detail:
            return "Your cart is empty: there is nothing to order."
        if "already confirmed" in problem.detail:
            return "Everything in your cart is already ordered and confirmed: see your orders."
        if "no longer exist" in problem.detail:
            return "A product in your cart is no longer sold. Remove it, then check out again."
        if "currenc" in problem.detail:
            return "Your cart holds products priced in different currencies; order them apart."
        return "Your order could not be placed as it stands. Check your cart and try again."
    if problem.status == 422:
        return "Choose a payment method."
    return general_problem(problem)


def order_problem(problem: Problem) -> str:
    if problem.status == 409:
        return "This order is already cancelled."
    if problem.status in (404, 422):
        return "There is no such order in your account."
    return general_problem(problem)


def login_problem(problem: Problem) -> str:
    if problem.status == 401:
        return "That email and password do not match an account. Check them and try again."
    if problem.status == 429:
        return "Too many attempts to sign in to this account from your address. " + _wait(
            problem.retry_after
        )
    if problem.status == 422:
        return "Enter your email and your password."
    return general_problem(problem)


def register_problem(problem: Problem) -> str:
    if problem.status == 409:
        return "An account with this email already exists. Log in instead."
    if problem.status == 429:
        return "Too many accounts were opened from your address. " + _wait(problem.retry_after)
    if problem.status == 422:
        return "Please correct the fields marked below."
    return general_problem(problem)


def product_problem(problem: Problem) -> str:
    if problem.status == 409:
        return "A product with this SKU already exists."
    if problem.status == 422:
        return "Please correct the fields marked below."
    if problem.status == 404:
        return "This product no longer exists."
    return general_problem(problem)


def general_problem(problem: Problem) -> str:
    """What any page says for a problem it has no better words for."""
    if problem.status == 401:
        return SESSION_ENDED
    if problem.status == 403:
        return "Only an administrator of the shop can do that."
    if problem.status == 404:
        return "We could not find that page or item."
    if problem.status == 413:
        return "That form was too large to accept."
    if problem.status == 429:
        return "Too many requests from your address. " + _wait(problem.retry_after)
    return "That did not work. Please check what you entered and try again."


def unavailable(_error: GatewayUnavailable) -> str:
    return TRY_AGAIN_SHORTLY


def field_errors(problem: Problem) -> dict[str, str]:
    """A validation problem's messages by field, as sentences."""
    return {name: sentence(message) for name, message in problem.errors.items()}
