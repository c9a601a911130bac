"""The order page's status panel, which htmx polls every second while the order is PENDING: once
the session has ended (logged out in another tab, expired), a poll is answered 286, htmx's "stop
polling", with a panel that says so and carries no trigger; htmx swaps no 4xx, so any other answer
would leave the page polling forever. A plain visit to the panel goes to the login page instead.
(A token the gateway refuses ends the session the same way: tests/e2e/test_storefront.py.)"""

from __future__ import annotations

import uuid

from fastapi import FastAPI

from web_storefront.sessions import COOKIE_NAME, Session

from .conftest import MakeClient

POLL = {"HX-Request": "true"}
SESSION_ENDED = "Your session has ended. Please log in again."


def assert_polling_stopped_with_the_sentence(poll_text: str, order_id: str) -> None:
    assert 'id="order-status"' in poll_text
    assert "hx-get" not in poll_text
    assert "hx-trigger" not in poll_text
    assert SESSION_ENDED in poll_text
    assert f'href="/login?next=/orders/{order_id}"' in poll_text


async def signed_in(app: FastAPI) -> Session:
    """A session as a login leaves it in Redis (no gateway here to log in through)."""
    session = Session.fresh()
    user = {
        "id": str(uuid.uuid4()),
        "email": "ada@example.com",
        "full_name": "Ada",
        "role": "customer",
    }
    session.sign_in("a-token-the-gateway-issued", 3600, user)
    await app.state.sessions.save(session)
    return session


async def test_a_poll_without_a_session_stops_polling_and_says_log_in_again(
    shop: MakeClient,
) -> None:
    order_id = str(uuid.uuid4())
    poll = await shop().get(f"/orders/{order_id}/status", headers=POLL)
    assert poll.status_code == 286
    assert poll.headers["content-type"].startswith("text/html")
    assert_polling_stopped_with_the_sentence(poll.text, order_id)


async def test_a_plain_visit_to_the_panel_after_the_session_ended_goes_to_log_in_and_back(
    shop: MakeClient,
) -> None:
    order_id = str(uuid.uuid4())
    client = shop()
    visit = await client.get(f"/orders/{order_id}/status")
    assert visit.status_code == 303
    assert visit.headers["location"] == f"/login?next=%2Forders%2F{order_id}"
    login = await client.get(visit.headers["location"])
    assert SESSION_ENDED in login.text


async def test_logging_out_in_another_tab_stops_the_polling_of_an_open_order_page(
    app: FastAPI, shop: MakeClient
) -> None:
    session = await signed_in(app)
    browser = shop()
    browser.cookies.set(COOKIE_NAME, session.id)
    order_id = str(uuid.uuid4())
    # Signed in, with the gateway down: a 503 htmx does not swap, so the page asks again (and
    # shows the status once the gateway is back).
    while_down = await browser.get(f"/orders/{order_id}/status", headers=POLL)
    assert while_down.status_code == 503
    # The other tab logs out (the same browser: the same cookie).
    logged_out = await browser.post("/logout", data={"csrf_token": session.csrf})
    assert logged_out.status_code == 303
    poll = await browser.get(f"/orders/{order_id}/status", headers=POLL)
    assert poll.status_code == 286
    assert_polling_stopped_with_the_sentence(poll.text, order_id)
