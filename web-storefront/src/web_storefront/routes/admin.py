"""For admins: create a product, edit one (name, description, price, stock). The gateway decides
who is an admin (403 otherwise); the storefront only hides the pages from others."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from web_storefront import wording
from web_storefront.forms import FormValues, form_values, price_cents, price_text, whole_number
from web_storefront.gateway import GatewayUnavailable, Problem
from web_storefront.pages import error_page, login_redirect, redirect, render, shop_api
from web_storefront.sessions import session_of

router = APIRouter(prefix="/admin")

MAX_STOCK = 2_147_483_647
# Gateway field names -> the form's.
_FORM_FIELD = {"price_cents": "price"}


def _refused(request: Request) -> Response | None:
    session = session_of(request.scope)
    if not session.signed_in:
        return login_redirect(request, "Log in as an administrator to manage products.")
    if not session.is_admin:
        return error_page(request, 403, "Only an administrator of the shop can manage products.")
    return None


def _form_page(
    request: Request,
    values: FormValues,
    *,
    product_id: str | None = None,
    error: str = "",
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    context: dict[str, Any] = {
        "values": values,
        "product_id": product_id,
        "error": error,
        "errors": errors or {},
    }
    return render(request, "product_form.html", context, status)


def _fields(values: FormValues, *, creating: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The product fields to send, and the form's own errors (numbers that are not numbers)."""
    errors: dict[str, str] = {}
    currency = values.get("currency", "USD").strip().upper() or "USD"
    fields: dict[str, Any] = {
        "name": values.get("name", "").strip(),
        "description": values.get("description", "").strip(),
    }
    cents = price_cents(values.get("price", ""), currency)
    if cents is None:
        errors["price"] = "Enter a price like 12.50."
    fields["price_cents"] = cents
    stock = whole_number(values.get("stock", ""), low=0, high=MAX_STOCK)
    if stock is None:
        errors["stock"] = "Enter the units in stock, a whole number (0 or more)."
    fields["stock"] = stock
    if creating:
        fields["sku"] = values.get("sku", "").strip()
        fields["currency"] = currency
    return fields, errors


def _problem_errors(problem: Problem) -> dict[str, str]:
    errors = {_FORM_FIELD.get(k, k): v for k, v in wording.field_errors(problem).items()}
    if problem.status == 409:
        errors["sku"] = "This SKU is already used by another product."
    return errors


@router.get("/products/new")
async def new_product(request: Request) -> Response:
    if refused := _refused(request):
        return refused
    return _form_page(request, {"currency": "USD", "stock": "0"})


@router.post("/products")
async def create_product(request: Request) -> Response:
    if refused := _refused(request):
        return refused
    values = await form_values(request)
    fields, errors = _fields(values, creating=True)
    if errors:
        return _form_page(
            request,
            values,
            error="Please correct the fields marked below.",
            errors=errors,
            status=422,
        )
    try:
        product = await shop_api(request).create_product(fields)
    except Problem as problem:
        return _form_page(
            request,
            values,
            error=wording.product_problem(problem),
            errors=_problem_errors(problem),
            status=problem.status,
        )
    except GatewayUnavailable as failure:
        return _form_page(request, values, error=wording.unavailable(failure), status=503)
    session_of(request.scope).flash(f"{product['name']} was added to the catalogue.")
    return redirect(f"/products/{product['id']}")


@router.get("/products/{product_id}/edit")
async def edit_product(request: Request, product_id: str) -> Response:
    if refused := _refused(request):
        return refused
    try:
        product = await shop_api(request).product(product_id)
    except Problem as problem:
        if problem.status in (404, 422):
            return error_page(request, 404, "This product is not in the catalogue.")
        raise
    values = {
        "sku": product["sku"],
        "name": product["name"],
        "description": product["description"],
        "price": price_text(product["price_cents"], product["currency"]),
        "currency": product["currency"],
        "stock": str(product["stock"]),
    }
    return _form_page(request, values, product_id=product_id)


@router.post("/products/{product_id}")
async def update_product(request: Request, product_id: str) -> Response:
    if refused := _refused(request):
        return refused
    values = await form_values(request)
    fields, errors = _fields(values, creating=False)
    if errors:
        return _form_page(
            request,
            values,
            product_id=product_id,
            error="Please correct the fields marked below.",
            errors=errors,
            status=422,
        )
    try:
        product = await shop_api(request).update_product(product_id, fields)
    except Problem as problem:
        return _form_page(
            request,
            values,
            product_id=product_id,
            error=wording.product_problem(problem),
            errors=_problem_errors(problem),
            status=problem.status,
        )
    except GatewayUnavailable as failure:
        return _form_page(
            request, values, product_id=product_id, error=wording.unavailable(failure), status=503
        )
    session_of(request.scope).flash(f"{product['name']} was saved.")
    return redirect(f"/products/{product_id}")
