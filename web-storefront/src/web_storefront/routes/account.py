"""Register, log in, log out. The token the gateway issues is kept in the server-side session
only; signing in or out gives the session a new id (no fixation), and signing out forgets the
token."""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Request
from starlette.responses import Response

from web_storefront import wording
from web_storefront.forms import form_values
from web_storefront.gateway import GatewayUnavailable, Problem
from web_storefront.pages import redirect, render, safe_next, shop_api
from web_storefront.sessions import session_of
from web_storefront.shop_api import ShopApi

router = APIRouter()


def _login_page(
    request: Request, *, email: str = "", next_url: str = "/", error: str = "", status: int = 200
) -> Response:
    context = {"email": email, "next": safe_next(next_url), "error": error}
    return render(request, "login.html", context, status)


def _with_retry_after(page: Response, problem: Problem) -> Response:
    """A throttled form's page says when to come back to machines too, as the gateway did."""
    if problem.status == 429 and problem.retry_after is not None:
        page.headers["Retry-After"] = str(problem.retry_after)
    return page


@router.get("/login")
async def login_form(request: Request, next: str = "/") -> Response:
    return _login_page(request, next_url=next)


async def _sign_in(request: Request, api: ShopApi, email: str, password: str) -> str:
    """Log in through the gateway and bind the token to the session; the shopper's name."""
    token = await api.login(email, password)
    api.caller = replace(api.caller, token=token["access_token"])
    me = await api.me()
    user = {
        "id": str(me["id"]),
        "email": str(me["email"]),
        "full_name": str(me["full_name"]),
        "role": str(me["role"]),
    }
    session_of(request.scope).sign_in(token["access_token"], int(token["expires_in"]), user)
    return user["full_name"]


@router.post("/login")
async def login(request: Request) -> Response:
    form = await form_values(request)
    email, password = form.get("email", "").strip(), form.get("password", "")
    next_url = safe_next(form.get("next"))
    if not email or not password:
        return _login_page(
            request,
            email=email,
            next_url=next_url,
            error="Enter your email and your password.",
            status=422,
        )
    try:
        name = await _sign_in(request, shop_api(request), email, password)
    except Problem as problem:
        error = wording.login_problem(problem)
        page = _login_page(
            request, email=email, next_url=next_url, error=error, status=problem.status
        )
        return _with_retry_after(page, problem)
    except GatewayUnavailable as failure:
        error = wording.unavailable(failure)
        return _login_page(request, email=email, next_url=next_url, error=error, status=503)
    session_of(request.scope).flash(f"Welcome back, {name}.")
    return redirect(next_url)


def _register_page(
    request: Request,
    form: dict[str, str] | None = None,
    *,
    error: str = "",
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    values = {name: (form or {}).get(name, "") for name in ("email", "full_name")}
    context = {"values": values, "error": error, "errors": errors or {}}
    return render(request, "register.html", context, status)


@router.get("/register")
async def register_form(request: Request) -> Response:
    return _register_page(request)


@router.post("/register")
async def register(request: Request) -> Response:
    form = await form_values(request)
    email, full_name = form.get("email", "").strip(), form.get("full_name", "").strip()
    password = form.get("password", "")
    api = shop_api(request)
    try:
        await api.register(email, password, full_name)
        await _sign_in(request, api, email, password)
    except Problem as problem:
        errors = wording.field_errors(problem)
        if problem.status == 409:
            errors["email"] = "This email already has an account."
        page = _register_page(
            request,
            form,
            error=wording.register_problem(problem),
            errors=errors,
            status=problem.status,
        )
        return _with_retry_after(page, problem)
    except GatewayUnavailable as failure:
        return _register_page(request, form, error=wording.unavailable(failure), status=503)
    session_of(request.scope).flash(f"Welcome, {full_name}. Your account is ready.")
    return redirect("/")


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = session_of(request.scope)
    session.sign_out()
    session.flash("You are logged out.")
    return redirect("/")
