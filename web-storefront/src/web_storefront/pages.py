"""Rendering: the Jinja2 environment (every value escaped), what every page knows (the session,
its CSRF token, the notice to show once), redirects, and the page for any failure no route
handled: a sentence, never a stack trace or a blank page."""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import Scope

from chassis.logging import get_logger
from web_storefront import wording
from web_storefront.gateway import Caller, GatewayClient, GatewayUnavailable, Problem
from web_storefront.middleware import request_id_of
from web_storefront.sessions import Session, session_of
from web_storefront.shop_api import ShopApi

log = get_logger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
HTMX = "vendor/htmx-2.0.11.min.js"

ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENVIRONMENT.filters["money"] = wording.money
ENVIRONMENT.globals.update(
    stock=wording.stock,
    order_status=wording.order_status,
    cancel_reason=wording.cancel_reason,
    payment_status=wording.payment_status,
    test_cards=wording.TEST_CARDS,
    htmx=HTMX,
)


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    session: Session | None = request.scope.get("state", {}).get("session")
    page = ENVIRONMENT.get_template(template).render(
        request=request,
        session=session,
        notice=session.take_notice() if session is not None else None,
        **(context or {}),
    )
    return HTMLResponse(page, status_code=status)


def redirect(url: str) -> RedirectResponse:
    """After a POST: 303, so a reload never posts again."""
    return RedirectResponse(url, status_code=303)


def safe_next(value: str | None) -> str:
    """A path on this shop to go back to after logging in; anything else (another site, a
    scheme, `//host`, a backslash) is the catalogue."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def login_redirect(request: Request, notice: str) -> RedirectResponse:
    session_of(request.scope).flash(notice)
    target = request.url.path
    if request.method == "GET" and request.url.query:
        target += "?" + request.url.query
    return redirect("/login?" + urlencode({"next": target}, quote_via=quote))


def shop_api(request: Request) -> ShopApi:
    """The gateway, for the shopper of this request: their address goes along as
    X-Forwarded-For, their token (when signed in) as the bearer."""
    session = session_of(request.scope)
    client: GatewayClient = request.app.state.gateway
    address = request.client.host if request.client else "unknown"
    token = session.token if session.signed_in else None
    return ShopApi(client, Caller(address, token, request_id_of(request.scope)))


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(
        request,
        "error.html",
        {"status": status, "title": HTTPStatus(status).phrase, "message": message},
        status=status,
    )


_STATUS_MESSAGES = {
    400: "The shop could not read that request.",
    403: "This form has expired or did not come from this shop. Go back, reload the page and "
    "try again.",
    404: "We could not find that page.",
    405: "That page cannot be used that way.",
    413: "That form was too large to accept.",
}


async def unavailable_page(scope: Scope) -> Response:
    """For the session middleware when Redis does not answer: no session, so no template
    that would need one."""
    request = Request(scope)
    return error_page(request, 503, wording.TRY_AGAIN_SHORTLY)


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = _STATUS_MESSAGES.get(status, "That did not work.")
    return error_page(request, status, message)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    # A malformed path or query parameter: for a person, that page does not exist.
    return error_page(request, 404, _STATUS_MESSAGES[404])


async def _on_unavailable(request: Request, exc: Exception) -> Response:
    return error_page(request, 503, wording.TRY_AGAIN_SHORTLY)


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    session = session_of(request.scope)
    if exc.status == 401 and session.token is not None:
        # The gateway no longer accepts the token (expired, keys rotated): sign out, say so.
        session.sign_out()
        return login_redirect(request, wording.SESSION_ENDED)
    status = exc.status if 400 <= exc.status < 500 else 400
    return error_page(request, status, wording.general_problem(exc))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    return error_page(request, 500, "Something went wrong on our side. Please try again shortly.")


def install_error_pages(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(GatewayUnavailable, _on_unavailable)
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(Exception, _on_unexpected)
