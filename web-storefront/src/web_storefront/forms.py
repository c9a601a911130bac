"""What the shop's forms send, read as text and checked where the gateway cannot: a quantity or a
price that is not a number never becomes a request. Everything else is the gateway's to judge."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from babel.numbers import get_currency_precision
from fastapi import Request

FormValues = dict[str, str]


async def form_values(request: Request) -> FormValues:
    """The submitted fields as text (the form was parsed, and its CSRF token checked, before)."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def whole_number(text: str, *, low: int, high: int) -> int | None:
    """`text` as an integer within [low, high], or None."""
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if low <= value <= high else None


def price_cents(text: str, currency: str) -> int | None:
    """`"12.50"` in USD -> 1250; None unless a positive amount with at most the currency's
    decimals (a cent can be written, a tenth of one cannot)."""
    try:
        digits = get_currency_precision(currency)
        amount = Decimal(text.strip().replace(",", ""))
    except (InvalidOperation, ValueError, LookupError):
        return None
    if not amount.is_finite() or amount <= 0:
        return None
    cents = amount.scaleb(digits)
    if cents != cents.to_integral_value():
        return None
    return int(cents)


def price_text(cents: int, currency: str) -> str:
    """Minor units back as the text a price field shows: 1250 USD -> "12.50"."""
    try:
        digits = get_currency_precision(currency)
    except (ValueError, LookupError):
        digits = 2
    return f"{Decimal(cents).scaleb(-digits):.{digits}f}"
