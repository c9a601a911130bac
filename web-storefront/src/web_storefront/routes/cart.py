"""The cart: add from a product page, change a quantity, remove a line, check out. A refused
change shows the cart (or the product page) again with the sentence next to the line and what
the shopper typed still in the field."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from web_storefront import wording
from web_storefront.forms import form_values, whole_number
from web_storefront.gateway import GatewayUnavailable, Problem
from web_storefront.pages import login_redirect, redirect, render, shop_api
from web_storefront.routes.catalogue import product_page
from web_storefront.sessions import session_of

router = APIRouter()

MAX_QUANTITY = 100
PAYMENT_TOKENS = {token for token, _ in wording.TEST_CARDS}
DEFAULT_CARD = wording.TEST_CARDS[0][0]


async def cart_page(
    request: Request,
    *,
    error: str = "",
    line_errors: dict[str, str] | None = None,
    typed: dict[str, str] | None = None,
    payment_token: str = DEFAULT_CARD,
    idempotency_key: str | None = None,
    status: int = 200,
) -> Response:
    cart = await shop_api(request).cart()
    context: dict[str, Any] = {
        "cart": cart,
        "error": error,
        "line_errors": line_errors or {},
        "typed": typed or {},
        "payment_token": payment_token,
        # One key per rendered checkout form: submitting it twice places one order.
        "idempotency_key": idempotency_key or str(uuid.uuid4()),
    }
    return render(request, "cart.html", context, status)


@router.get("/cart")
async def cart(request: Request) -> Response:
    if not session_of(request.scope).signed_in:
        return login_redirect(request, "Log in to see your cart.")
    return await cart_page(request)


@router.post("/cart/items")
async def add_to_cart(request: Request) -> Response:
    form = await form_values(request)
    product_id, typed = form.get("product_id", ""), form.get("quantity", "")
    session = session_of(request.scope)
    if not session.signed_in:
        session.flash("Log in to fill your cart.")
        return redirect(f"/login?next=/products/{uuid_or_blank(product_id)}")
    quantity = whole_number(typed, low=1, high=MAX_QUANTITY)
    if quantity is None:
        error = f"Enter a quantity from 1 to {MAX_QUANTITY}."
        return await product_page(request, product_id, quantity=typed, error=error, status=422)
    try:
        cart = await shop_api(request).add_to_cart(product_id, quantity)
    except Problem as problem:
        error = wording.cart_problem(problem)
        return await product_page(
            request, product_id, quantity=typed, error=error, status=problem.status
        )
    except GatewayUnavailable as failure:
        error = wording.unavailable(failure)
        return await product_page(request, product_id, quantity=typed, error=error, status=503)
    name = next(
        (line["name"] for line in cart.get("items", []) if line["product_id"] == product_id),
        "the product",
    )
    session.flash(f"Added {quantity} \N{MULTIPLICATION SIGN} {name} to your cart.")
    return redirect("/cart")


def uuid_or_blank(text: str) -> str:
    """An id placed in a redirect: only if it is one."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return ""


@router.post("/cart/items/{product_id}")
async def change_quantity(request: Request, product_id: str) -> Response:
    if not session_of(request.scope).signed_in:
        return login_redirect(request, "Log in to change your cart.")
    typed = (await form_values(request)).get("quantity", "")
    quantity = whole_number(typed, low=0, high=MAX_QUANTITY)
    if quantity is None:
        error = f"Enter a quantity from 0 to {MAX_QUANTITY} (0 removes the line)."
        return await cart_page(
            request, line_errors={product_id: error}, typed={product_id: typed}, status=422
        )
    try:
        await shop_api(request).set_quantity(product_id, quantity)
    except Problem as problem:
        return await cart_page(
            request,
            line_errors={product_id: wording.cart_problem(problem)},
            typed={product_id: typed},
            status=problem.status,
        )
    session_of(request.scope).flash("Your cart was updated.")
    return redirect("/cart")


@router.post("/cart/items/{product_id}/remove")
async def remove_line(request: Request, product_id: str) -> Response:
    if not session_of(request.scope).signed_in:
        return login_redirect(request, "Log in to change your cart.")
    try:
        await shop_api(request).remove_from_cart(product_id)
    except Problem as problem:
        if problem.status != 404:  # already gone: what the shopper wanted
            return await cart_page(request, error=wording.cart_problem(problem), status=409)
    session_of(request.scope).flash("The line was removed from your cart.")
    return redirect("/cart")


@router.post("/checkout")
async def checkout(request: Request) -> Response:
    if not session_of(request.scope).signed_in:
        return login_redirect(request, "Log in to check out.")
    form = await form_values(request)
    payment_token = form.get("payment_token", "")
    key = form.get("idempotency_key", "")
    if payment_token not in PAYMENT_TOKENS:
        return await cart_page(
            request, error="Choose a payment method.", idempotency_key=key or None, status=422
        )
    try:
        order = await shop_api(request).checkout(payment_token, key or str(uuid.uuid4()))
    except Problem as problem:
        return await cart_page(
            request,
            error=wording.checkout_problem(problem),
            payment_token=payment_token,
            idempotency_key=key or None,
            status=problem.status,
        )
    except GatewayUnavailable as failure:
        # The order may or may not exist: the same key on the next try finds it, never a second.
        return await cart_page(
            request,
            error=wording.unavailable(failure),
            payment_token=payment_token,
            idempotency_key=key or None,
            status=503,
        )
    return redirect(f"/orders/{order['id']}")
