"""Request and response bodies of the public REST API (docs/architecture.md, section 3), with
examples.

Input rules mirror the services' own, so bad input is a 422 naming the field before any hop.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field

from chassis.validation import MAX_PRICE_CENTS, hidden_character, hidden_character_message

MAX_INT32 = 2**31 - 1


def storable_text(value: str) -> str:
    """Text every store and protobuf can carry: no NUL (PostgreSQL refuses it in text) and
    no lone surrogate (not encodable as UTF-8). Found by the schemathesis fuzz test."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text") from exc
    return value


def visible_line(value: str) -> str:
    """One line that shows what it is: no control, bidi-control or zero-width character (the
    services apply the same rule, chassis.validation)."""
    hidden = hidden_character(value)
    if hidden is not None:
        raise ValueError(hidden_character_message(hidden))
    return value


def visible_text(value: str) -> str:
    """Like `visible_line`, but line breaks and tabs are allowed."""
    hidden = hidden_character(value, multiline=True)
    if hidden is not None:
        raise ValueError(hidden_character_message(hidden))
    return value


Text = Annotated[str, AfterValidator(storable_text)]
# Printable ASCII without spaces, like the keys clients generate (UUIDs, ULIDs, hashes).
IdempotencyKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="A client-chosen key (at most 255 printable ASCII characters): repeating a "
        "checkout with the same key returns the same order.",
        examples=["7f3c2a9e-checkout-1"],
    ),
]
# A payment provider's token, never a card number (what service-order checks too).
PaymentToken = Annotated[
    str,
    Field(
        pattern=r"^pm_[A-Za-z0-9_]{1,64}$",
        description="The payment method to charge: a provider's token, `pm_` then 1 to 64 "
        "letters, digits or underscores. The simulated provider's test tokens: `pm_card_ok` "
        "(authorised), `pm_card_declined` (declined), `pm_card_flaky` (fails twice, then "
        "authorised), `pm_card_slow` (answers after 2 s); any other is declined.",
        examples=["pm_card_ok"],
    ),
]
Line = Annotated[str, AfterValidator(storable_text), AfterValidator(visible_line)]

Quantity = Annotated[int, Field(strict=True, ge=1, le=100, examples=[2])]
QuantityOrZero = Annotated[int, Field(strict=True, ge=0, le=100, examples=[3])]
# At most 10^12 cents: no line, cart or order total can then overflow int64.
PriceCents = Annotated[int, Field(strict=True, gt=0, le=MAX_PRICE_CENTS, examples=[1999])]
Stock = Annotated[int, Field(strict=True, ge=0, le=MAX_INT32, examples=[25])]
ProductName = Annotated[Line, Field(min_length=1, max_length=200, examples=["Walnut desk lamp"])]
Description = Annotated[
    str,
    AfterValidator(storable_text),
    AfterValidator(visible_text),
    Field(max_length=5000, examples=["Warm light, solid walnut base."]),
]


class _Input(BaseModel):
    # Unknown fields are refused rather than ignored: a typo must not pass silently.
    model_config = ConfigDict(extra="forbid")


class RegisterIn(_Input):
    email: Annotated[EmailStr, AfterValidator(visible_line)] = Field(
        max_length=320, examples=["ada@example.com"]
    )
    password: Text = Field(min_length=8, max_length=128, examples=["correct horse battery"])
    full_name: Line = Field(min_length=1, max_length=200, examples=["Ada Lovelace"])


class LoginIn(_Input):
    email: Text = Field(min_length=1, max_length=320, examples=["ada@example.com"])
    password: Text = Field(min_length=1, max_length=128, examples=["correct horse battery"])


class TokenOut(BaseModel):
    access_token: str = Field(examples=["eyJhbGciOiJFZERTQSIsImtpZCI6Ii4uLiJ9..."])
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(examples=[3600])


class UserOut(BaseModel):
    id: UUID
    email: str = Field(examples=["ada@example.com"])
    full_name: str = Field(examples=["Ada Lovelace"])
    role: Literal["customer", "admin"]
    created_at: datetime


class ProductIn(_Input):
    sku: Line = Field(min_length=1, max_length=64, examples=["SKU-000042"])
    name: ProductName
    description: Description = ""
    price_cents: PriceCents
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$", examples=["USD"])
    stock: Stock


class ProductPatch(_Input):
    name: ProductName | None = None
    description: Description | None = None
    price_cents: PriceCents | None = None
    stock: Stock | None = None


class ProductOut(BaseModel):
    id: UUID
    sku: str = Field(examples=["SKU-000042"])
    name: str = Field(examples=["Walnut desk lamp"])
    description: str = Field(examples=["Warm light, solid walnut base."])
    price_cents: int = Field(examples=[1999])
    currency: str = Field(examples=["USD"])
    stock: int = Field(examples=[25])


class ProductPage(BaseModel):
    items: list[ProductOut]
    next_page_token: str | None = Field(
        None, description="Pass as page_token for the next page; null on the last page."
    )


class CartItemIn(_Input):
    product_id: UUID
    quantity: Quantity


class CartQuantityIn(_Input):
    quantity: QuantityOrZero = Field(description="0 removes the line.")


class CartLineOut(BaseModel):
    product_id: UUID
    name: str = Field(examples=["Walnut desk lamp"])
    quantity: int = Field(examples=[2])
    unit_price_cents: int = Field(examples=[1999])
    line_total_cents: int = Field(examples=[3998])


class CartOut(BaseModel):
    items: list[CartLineOut]
    total_cents: int = Field(examples=[3998])
    currency: str = Field(examples=["USD"])


class CheckoutIn(_Input):
    payment_token: PaymentToken


class OrderLineOut(BaseModel):
    product_id: UUID
    name: str = Field(examples=["Walnut desk lamp"])
    quantity: int = Field(examples=[2])
    unit_price_cents: int = Field(examples=[1999], description="Price at checkout.")
    line_total_cents: int = Field(examples=[3998])


class OrderOut(BaseModel):
    id: UUID
    status: Literal["PENDING", "CONFIRMED", "CANCELLED"] = Field(
        description="PENDING until stock is reserved and the payment authorised (CONFIRMED) "
        "or the saga cancels it.",
        examples=["CONFIRMED"],
    )
    cancel_reason: (
        Literal["OUT_OF_STOCK", "PAYMENT_DECLINED", "USER_CANCELLED", "TIMEOUT"] | None
    ) = Field(
        None,
        description="Why it was cancelled; null unless status is CANCELLED.",
        examples=[None, "PAYMENT_DECLINED"],
    )
    payment_status: Literal["PENDING", "AUTHORIZED", "DECLINED", "REFUNDED", "VOIDED"] | None = (
        Field(
            None,
            description="Where the order's payment is: PENDING until the provider answers, "
            "AUTHORIZED (charged once the order is confirmed), DECLINED, REFUNDED (cancelled "
            "after its confirmation) or VOIDED (cancelled before it); null for an order placed "
            "before payments existed.",
            examples=["AUTHORIZED"],
        )
    )
    items: list[OrderLineOut]
    total_cents: int = Field(examples=[3998])
    currency: str = Field(examples=["USD"])
    created_at: datetime
    updated_at: datetime


class OrderPage(BaseModel):
    items: list[OrderOut] = Field(description="The caller's orders, newest first.")
    next_page_token: str | None = Field(
        None, description="Pass as page_token for the next page; null on the last page."
    )
