"""The web storefront in front of the running platform, spoken to over plain HTTP as a browser
would (cookies, forms): its security promises, every error a person can meet as a sentence with
the form kept, and the gateway telling shoppers apart behind it (X-Forwarded-For, trusted)."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Storefront
from .shop import PASSWORD, Admin, login
from .storefront import IDEMPOTENCY_KEY, WebShopper, csrf_of, storefront_client, text_of

SESSION_COOKIE = "storefront_session"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=\"/static/)", re.IGNORECASE)


@pytest.fixture
async def api(storefront: Storefront) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=storefront.platform.base_url, timeout=30) as client:
        yield client


@pytest.fixture
async def admin(api: httpx.AsyncClient) -> Admin:
    return Admin(api, await login(api, ADMIN_EMAIL, ADMIN_PASSWORD))


@pytest.fixture
async def shopper(storefront: Storefront) -> AsyncIterator[WebShopper]:
    async with storefront_client(storefront.url) as client:
        web = WebShopper(client)
        registered = await web.register()
        assert registered.status_code == 303, text_of(registered)
        yield web


def set_cookie(response: httpx.Response) -> str:
    [cookie] = [v for v in response.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE)]
    return cookie


async def test_every_page_carries_a_content_security_policy_with_no_inline_script_or_other_origin(
    shopper: WebShopper, admin: Admin
) -> None:
    product = await admin.create_product(stock=3)
    await shopper.post_form(
        f"/products/{product['id']}",
        "/cart/items",
        {"product_id": product["id"], "quantity": "1"},
    )
    pages = [
        "/",
        "/?q=lamp",
        f"/products/{product['id']}",
        "/cart",
        "/orders",
        "/login",
        "/register",
        "/no-such-page",
        f"/products/{uuid.uuid4()}",
        "/static/shop.css",
    ]
    for path in pages:
        response = await shopper.client.get(path)
        policy = response.headers.get("content-security-policy", "")
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        assert directives["default-src"] == "'self'", path
        assert directives["script-src"] == "'self'", path
        assert directives["style-src"] == "'self'", path
        for loophole in ("unsafe", "http", "*", "data:"):
            assert loophole not in policy, path
        assert response.headers["x-content-type-options"] == "nosniff"
        if path != "/static/shop.css":
            # Scripts only as files of the shop; no inline script, style or handler.
            assert not INLINE_SCRIPT.search(response.text), path
            assert not re.search(r" (style|on[a-z]+)=", response.text), path
            assert response.headers["cache-control"] == "no-store", path
    refused = await shopper.client.post("/logout", data={})
    assert refused.status_code == 403
    assert "content-security-policy" in refused.headers


async def test_the_browser_holds_only_an_opaque_httponly_samesite_cookie_renewed_at_login(
    storefront: Storefront,
) -> None:
    async with storefront_client(storefront.url) as client:
        first = await client.get("/login")
        cookie = set_cookie(first)
        assert re.fullmatch(
            rf"{SESSION_COOKIE}=[A-Za-z0-9_-]{{43}}; Path=/; HttpOnly; SameSite=Lax", cookie
        ), cookie
        web = WebShopper(client)
        registered = await web.register()
        assert registered.status_code == 303
        # Signing in gives the session a new id: a planted id never becomes a signed-in one.
        assert set_cookie(registered) != cookie
        for path in ("/", "/cart", "/orders"):
            page = await client.get(path)
            # No JWT (three base64url parts, the first of them JSON) anywhere in a page; a
            # catalogue page token is base64 JSON too, but one part only.
            assert not re.search(r"eyJ[\w-]+\.[\w-]+\.[\w-]+", page.text), page.text
            assert "Bearer" not in page.text


async def test_a_form_post_without_its_csrf_token_is_refused_and_changes_nothing(
    shopper: WebShopper, admin: Admin
) -> None:
    product = await admin.create_product(stock=5)
    fields = {"product_id": product["id"], "quantity": "2"}
    for token in (None, "", "forged-token"):
        data = fields if token is None else {**fields, "csrf_token": token}
        refused = await shopper.client.post("/cart/items", data=data)
        assert refused.status_code == 403
        assert "did not come from this shop" in text_of(refused)
    # Another shopper's valid token is no good either.
    async with storefront_client(shopper.client.base_url.__str__()) as other:
        other_token = csrf_of(await other.get("/login"))
    refused = await shopper.client.post("/cart/items", data={**fields, "csrf_token": other_token})
    assert refused.status_code == 403
    cart = await shopper.client.get("/cart")
    assert product["name"] not in cart.text


async def test_logging_out_ends_the_session_on_the_server_side(storefront: Storefront) -> None:
    async with storefront_client(storefront.url) as client:
        web = WebShopper(client)
        await web.register()
        signed_in = client.cookies[SESSION_COOKIE]
        assert (await client.get("/cart")).status_code == 200
        logged_out = await web.post_form("/", "/logout", {})
        assert logged_out.status_code == 303
    # The old cookie, replayed by anyone who kept it, opens nothing.
    async with storefront_client(storefront.url) as replay:
        replay.cookies.set(SESSION_COOKIE, signed_in)
        cart = await replay.get("/cart")
        assert cart.status_code == 303
        assert cart.headers["location"].startswith("/login")


async def test_a_validation_problem_is_shown_next_to_its_field_with_the_form_kept(
    storefront: Storefront,
) -> None:
    async with storefront_client(storefront.url) as client:
        web = WebShopper(client)
        fields = {"email": "ada@example.com", "password": "short", "full_name": "Ada <b>L</b>"}
        page = await web.post_form("/register", "/register", fields)
    assert page.status_code == 422
    assert "Please correct the fields marked below." in text_of(page)
    field = re.search(
        r'<div class="field invalid">\s*<label for="f-password">.*?</div>', page.text, re.S
    )
    assert field, "the password field is not marked"
    assert 'class="field-error"' in field.group(0)
    assert "8 characters" in field.group(0)
    assert 'value="ada@example.com"' in page.text
    assert 'value="Ada &lt;b&gt;L&lt;/b&gt;"' in page.text
    assert 'value="short"' not in page.text  # a password is never sent back


async def test_more_than_the_stock_is_a_sentence_on_the_product_page_with_the_quantity_kept(
    shopper: WebShopper, admin: Admin
) -> None:
    product = await admin.create_product(stock=3)
    page = await shopper.post_form(
        f"/products/{product['id']}", "/cart/items", {"product_id": product["id"], "quantity": "7"}
    )
    assert page.status_code == 409
    assert "Only 3 in stock: your cart would hold 7." in text_of(page)
    assert 'value="7"' in page.text
    not_a_number = await shopper.post_form(
        f"/products/{product['id']}",
        "/cart/items",
        {"product_id": product["id"], "quantity": "two"},
    )
    assert not_a_number.status_code == 422
    assert "Enter a quantity from 1 to 100." in text_of(not_a_number)


async def test_a_double_submitted_checkout_form_places_one_order(
    shopper: WebShopper, admin: Admin
) -> None:
    product = await admin.create_product(stock=5)
    await shopper.post_form(
        f"/products/{product['id']}", "/cart/items", {"product_id": product["id"], "quantity": "1"}
    )
    cart = await shopper.client.get("/cart")
    key = IDEMPOTENCY_KEY.search(cart.text)
    assert key
    fields = {
        "csrf_token": csrf_of(cart),
        "idempotency_key": key.group(1),
        "payment_token": "pm_card_ok",
    }
    first = await shopper.client.post("/checkout", data=fields)
    second = await shopper.client.post("/checkout", data=fields)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert first.headers["location"].startswith("/orders/")


async def test_through_the_storefront_the_login_throttle_holds_per_shopper(
    storefront: Storefront,
) -> None:
    async with storefront_client(storefront.url) as client:
        owner = WebShopper(client)
        await owner.register()
        await owner.post_form("/", "/logout", {})
    # An attacker, from their own address, guesses the owner's password.
    async with storefront_client(storefront.url, "127.0.0.2") as attacker_client:
        attacker = WebShopper(attacker_client)
        for _ in range(5):
            wrong = await attacker.login(owner.email, "not the password")
            assert wrong.status_code == 401
            assert "do not match an account" in text_of(wrong)
            assert f'value="{owner.email}"' in wrong.text
        throttled = await attacker.login(owner.email, PASSWORD)
        assert throttled.status_code == 429
        # When to come back, from service-user's RetryInfo through the gateway's Retry-After: the
        # rest of the 15-minute window (LOGIN_WINDOW_SECONDS), said in minutes.
        said = re.search(
            r"Too many attempts to sign in to this account from your address\. "
            r"Please try again in (\d+) minutes\.",
            text_of(throttled),
        )
        assert said, text_of(throttled)
        assert int(said.group(1)) == 15
        assert 890 < int(throttled.headers["retry-after"]) <= 900
    # The owner, another shopper of the same storefront, is not locked out.
    async with storefront_client(storefront.url, "127.0.0.3") as owner_client:
        signed_in = await WebShopper(owner_client).login(owner.email, PASSWORD)
        assert signed_in.status_code == 303, text_of(signed_in)


POLL = {"HX-Request": "true"}
SESSION_ENDED = "Your session has ended. Please log in again."


def assert_polling_stopped_with_the_sentence(poll: httpx.Response) -> None:
    # 286 is htmx's "stop polling": it swaps this panel in and asks no more; a 4xx it would not
    # swap, and the page would poll forever.
    assert poll.status_code == 286, text_of(poll)
    assert 'id="order-status"' in poll.text
    assert "hx-trigger" not in poll.text
    assert SESSION_ENDED in text_of(poll)


async def test_an_open_order_page_stops_polling_once_the_shopper_logs_out_in_another_tab(
    shopper: WebShopper, admin: Admin
) -> None:
    product = await admin.create_product(stock=5)
    await shopper.post_form(
        f"/products/{product['id']}", "/cart/items", {"product_id": product["id"], "quantity": "1"}
    )
    placed = await shopper.post_form(
        "/cart", "/checkout", {"payment_token": "pm_card_ok", "idempotency_key": str(uuid.uuid4())}
    )
    assert placed.status_code == 303, text_of(placed)
    status_panel = placed.headers["location"] + "/status"
    live = await shopper.client.get(status_panel, headers=POLL)
    assert live.status_code == 200
    assert 'id="order-status"' in live.text
    # The other tab is the same browser: the same cookie.
    assert (await shopper.post_form("/", "/logout", {})).status_code == 303
    assert_polling_stopped_with_the_sentence(await shopper.client.get(status_panel, headers=POLL))


async def test_a_poll_with_a_token_the_gateway_refuses_signs_out_and_stops_polling(
    shopper: WebShopper, storefront: Storefront
) -> None:
    # The storefront's session still holds a token the gateway no longer accepts (its keys were
    # rotated, say): made here by overwriting the token in the session's record in Redis.
    env = storefront.platform.env
    cookie = shopper.client.cookies[SESSION_COOKIE]
    key = (
        f"{env['REDIS_KEY_PREFIX']}storefront:session:{hashlib.sha256(cookie.encode()).hexdigest()}"
    )
    redis = Redis.from_url(env["REDIS_URL"])
    try:
        record = orjson.loads(await redis.get(key))
        record["token"] = "eyJhbGciOiJFZERTQSJ9.refused.signature"
        await redis.set(key, orjson.dumps(record), keepttl=True)
    finally:
        await redis.aclose()
    poll = await shopper.client.get(f"/orders/{uuid.uuid4()}/status", headers=POLL)
    assert_polling_stopped_with_the_sentence(poll)
    # ...and the shopper is signed out, not only told so.
    cart = await shopper.client.get("/cart")
    assert cart.status_code == 303
    assert cart.headers["location"].startswith("/login")
