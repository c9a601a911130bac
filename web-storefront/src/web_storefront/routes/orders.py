"""Order history, the order page with its live status, and cancelling. The status panel polls
(htmx) while the order is PENDING; without JavaScript the page reloads itself instead. Polling
ends with a final status, or with the session: a poll after it ended is answered 286 (htmx's
"stop polling") with a panel that says so and polls no more."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from web_storefront import wording
from web_storefront.gateway import Problem
from web_storefront.pages import error_page, login_redirect, redirect, render, shop_api
from web_storefront.sessions import session_of

router = APIRouter()

PAGE_SIZE = 20
CANCELLABLE = frozenset({"PENDING", "CONFIRMED"})


@router.get("/orders")
async def orders(request: Request, page_token: str = "") -> Response:
    if not session_of(request.scope).signed_in:
        return login_redirect(request, "Log in to see your orders.")
    try:
        page = await shop_api(request).orders(page_token=page_token[:1024], limit=PAGE_SIZE)
    except Problem as problem:
        if problem.status != 422:
            raise
        return redirect("/orders")
    next_token = page.get("next_page_token")
    context = {
        "orders": page.get("items", []),
        "next_link": "/orders?" + urlencode({"page_token": next_token}) if next_token else None,
        "first_link": "/orders" if page_token else None,
    }
    return render(request, "orders.html", context)


async def _order_or_404(request: Request, order_id: str) -> dict[str, object] | Response:
    try:
        order: dict[str, object] = await shop_api(request).order(order_id)
    except Problem as problem:
        if problem.status in (404, 422):
            return error_page(request, 404, "There is no such order in your account.")
        raise
    return order


@router.get("/orders/{order_id}")
async def order(request: Request, order_id: str) -> Response:
    if not session_of(request.scope).signed_in:
        return login_redirect(request, "Log in to see your order.")
    found = await _order_or_404(request, order_id)
    if isinstance(found, Response):
        return found
    context = {"order": found, "cancellable": found["status"] in CANCELLABLE}
    return render(request, "order.html", context)


# htmx swaps a 286 answer in like a 200, then stops the polling that asked for it; a 4xx it
# would not swap, and the poll would go on forever.
STOP_POLLING = 286


def _session_ended(request: Request, order_id: str) -> Response:
    """For the page's poll: the panel saying the session ended, and the end of polling. Anyone
    else (a link, a reload) goes to the login page, back to the order after it."""
    if request.headers.get("HX-Request") != "true":
        session_of(request.scope).flash(wording.SESSION_ENDED)
        return redirect("/login?" + urlencode({"next": f"/orders/{order_id}"}))
    context = {"order_id": order_id, "message": wording.SESSION_ENDED}
    return render(request, "order_status_ended.html", context, status=STOP_POLLING)


@router.get("/orders/{order_id}/status")
async def order_status(request: Request, order_id: str) -> Response:
    """The status panel alone, for the page's polling."""
    session = session_of(request.scope)
    if not session.signed_in:
        # Logged out in another tab, or the session or its token expired.
        return _session_ended(request, order_id)
    try:
        found = await _order_or_404(request, order_id)
    except Problem as problem:
        if problem.status != 401:
            raise
        # The gateway no longer accepts the token (expired early, keys rotated): sign out.
        session.sign_out()
        return _session_ended(request, order_id)
    if isinstance(found, Response):
        return found
    context = {"order": found, "cancellable": found["status"] in CANCELLABLE}
    return render(request, "order_status.html", context)


@router.post("/orders/{order_id}/cancel")
async def cancel(request: Request, order_id: str) -> Response:
    session = session_of(request.scope)
    if not session.signed_in:
        return login_redirect(request, "Log in to cancel an order.")
    try:
        await shop_api(request).cancel_order(order_id)
    except Problem as problem:
        if problem.status in (404, 422):
            return error_page(request, 404, wording.order_problem(problem))
        session.flash(wording.order_problem(problem))
        return redirect(f"/orders/{order_id}")
    session.flash("Your order was cancelled. Anything reserved for it is back in stock.")
    return redirect(f"/orders/{order_id}")
