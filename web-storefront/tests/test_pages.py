"""What a person meets when the platform behind the storefront is down, and the protections that
hold whatever the gateway says: CSRF, the session cookie, security headers, a stable error page."""

from __future__ import annotations

import re

import httpx
import pytest

from chassis.testing.process import free_port
from web_storefront.app import create_app
from web_storefront.settings import StorefrontSettings

from .conftest import MakeClient

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
TRY_AGAIN = "Please try again shortly."


async def test_an_unreachable_gateway_is_a_try_again_shortly_page_not_a_stack_trace(
    shop: MakeClient,
) -> None:
    page = await shop().get("/")
    assert page.status_code == 503
    assert TRY_AGAIN in page.text
    assert "Traceback" not in page.text
    assert "httpx" not in page.text
    assert page.headers["content-type"].startswith("text/html")


async def test_a_login_while_the_gateway_is_down_keeps_the_email_and_says_try_again(
    shop: MakeClient,
) -> None:
    client = shop()
    token = CSRF.search((await client.get("/login")).text)
    assert token
    page = await client.post(
        "/login",
        data={"csrf_token": token.group(1), "email": "ada@example.com", "password": "secret-pw"},
    )
    assert page.status_code == 503
    assert TRY_AGAIN in page.text
    assert 'value="ada@example.com"' in page.text
    assert "secret-pw" not in page.text


@pytest.mark.parametrize(
    "path", ["/logout", "/login", "/cart/items", "/checkout", "/admin/products"]
)
async def test_every_form_post_without_the_sessions_csrf_token_is_refused(
    shop: MakeClient, path: str
) -> None:
    client = shop()
    await client.get("/login")  # a session exists, with its own token
    for data in ({}, {"csrf_token": "guess"}):
        refused = await client.post(path, data=data)
        assert refused.status_code == 403, path
        assert "did not come from this shop" in refused.text


async def test_a_post_from_a_browser_with_no_session_is_refused(shop: MakeClient) -> None:
    refused = await shop().post("/logout", data={"csrf_token": "x" * 43})
    assert refused.status_code == 403


async def test_the_session_cookie_is_httponly_lax_and_secure_only_over_https(
    shop: MakeClient,
) -> None:
    plain = (await shop().get("/login")).headers["set-cookie"]
    assert re.fullmatch(r"storefront_session=[\w-]{43}; Path=/; HttpOnly; SameSite=Lax", plain)
    secure = (await shop("https://shop.test").get("/login")).headers["set-cookie"]
    assert secure.endswith("; HttpOnly; SameSite=Lax; Secure")


async def test_a_page_without_a_form_stores_no_session(shop: MakeClient) -> None:
    page = await shop().get("/static/shop.css")
    assert page.status_code == 200
    assert "set-cookie" not in page.headers
    assert page.headers["cache-control"] == "public, max-age=3600"


async def test_an_unknown_page_is_a_sentence_with_the_security_headers(shop: MakeClient) -> None:
    page = await shop().get("/no/such/page")
    assert page.status_code == 404
    assert "We could not find that page." in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


async def test_an_oversized_form_is_refused_before_it_is_read(shop: MakeClient) -> None:
    client = shop()
    await client.get("/login")
    refused = await client.post(
        "/login",
        content=b"email=" + b"a" * 100_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert refused.status_code == 413
    assert "too large" in refused.text


async def test_a_session_store_that_does_not_answer_is_a_try_again_shortly_page(
    settings: StorefrontSettings,
) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app = create_app(down)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        page = await client.get("/login")
    await app.state.gateway.close()
    assert page.status_code == 503
    assert TRY_AGAIN in page.text
    assert "set-cookie" not in page.headers


async def test_readyz_names_what_is_not_ready(shop: MakeClient) -> None:
    reply = await shop().get("/readyz")
    assert reply.status_code == 503
    assert reply.json() == {"status": "unavailable", "failing": ["gateway"]}
    assert (await shop().get("/healthz")).status_code == 200
