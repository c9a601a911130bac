"""The simulated provider over real HTTP, as a real process on its own database: every test
token, idempotency per key, the void tombstone, the ledger's uniqueness, and its restart."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from .conftest import SLOW_SECONDS, Provider


def body(
    key: str, token: str = "pm_card_ok", amount: int = 1250, currency: str = "EUR"
) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "payment_token": token,
        "amount_cents": amount,
        "currency": currency,
    }


async def authorize(provider: Provider, key: str, **values: Any) -> httpx.Response:
    return await provider.client.post("/v1/authorizations", json=body(key, **values))


async def op(provider: Provider, key: str, operation: str) -> httpx.Response:
    return await provider.client.post(f"/v1/authorizations/{key}/{operation}")


@pytest.fixture
def key() -> str:
    return str(uuid.uuid4())


async def test_pm_card_ok_is_authorised_once_per_key(provider: Provider, key: str) -> None:
    first = await authorize(provider, key)
    again = await authorize(provider, key)

    assert (first.status_code, first.json()) == (200, {"status": "authorized"})
    assert (again.status_code, again.json()) == (200, {"status": "authorized"})
    assert await provider.ledger(key) == [("authorize", 1250)]
    row = (await provider.client.get(f"/v1/authorizations/{key}")).json()
    assert (row["status"], row["amount_cents"], row["currency"]) == ("authorized", 1250, "EUR")
    assert row["authorize_attempts"] == 1


@pytest.mark.parametrize(
    ("token", "reason"),
    [("pm_card_declined", "card_declined"), ("pm_card_stolen", "unknown_payment_method")],
)
async def test_declined_tokens_charge_nothing(
    provider: Provider, key: str, token: str, reason: str
) -> None:
    first = await authorize(provider, key, token=token)
    again = await authorize(provider, key, token=token)

    assert first.json() == again.json() == {"status": "declined", "reason": reason}
    assert first.status_code == 200
    assert await provider.ledger(key) == []


async def test_pm_card_flaky_fails_twice_per_key_then_is_authorised(
    provider: Provider, key: str
) -> None:
    answers = [await authorize(provider, key, token="pm_card_flaky") for _ in range(4)]
    other = await authorize(provider, str(uuid.uuid4()), token="pm_card_flaky")

    assert [a.status_code for a in answers] == [503, 503, 200, 200]
    assert answers[0].json() == {"error": "transient"}
    assert answers[2].json() == {"status": "authorized"}
    assert other.status_code == 503  # counted per key
    assert await provider.ledger(key) == [("authorize", 1250)]


async def test_pm_card_slow_answers_after_the_delay_then_from_what_it_stored(
    provider: Provider, key: str
) -> None:
    started = time.monotonic()
    first = await authorize(provider, key, token="pm_card_slow")
    slow = time.monotonic() - started
    started = time.monotonic()
    again = await authorize(provider, key, token="pm_card_slow")

    assert first.json() == again.json() == {"status": "authorized"}
    assert slow >= SLOW_SECONDS
    assert time.monotonic() - started < SLOW_SECONDS


async def test_a_key_reused_with_another_amount_currency_or_token_is_a_conflict(
    provider: Provider, key: str
) -> None:
    await authorize(provider, key)

    for change in ({"amount": 1251}, {"currency": "USD"}, {"token": "pm_card_flaky"}):
        reply = await authorize(provider, key, **change)
        assert reply.status_code == 409
        assert reply.json()["error"] == "idempotency_key_reused"
    assert await provider.ledger(key) == [("authorize", 1250)]


@pytest.mark.parametrize(
    "broken",
    [
        {"amount_cents": 0},
        {"amount_cents": -5},
        {"amount_cents": "1250"},
        {"amount_cents": True},
        {"currency": "eur"},
        {"currency": "EURO"},
        {"payment_token": "card_ok"},
        {"payment_token": ""},
        {"idempotency_key": ""},
        {"idempotency_key": "with space"},
        {"extra": 1},
    ],
)
async def test_a_malformed_body_is_422(provider: Provider, broken: dict[str, Any]) -> None:
    reply = await provider.client.post(
        "/v1/authorizations", json={**body(str(uuid.uuid4())), **broken}
    )

    assert reply.status_code == 422


async def test_capture_then_refund_each_once(provider: Provider, key: str) -> None:
    await authorize(provider, key)

    captures = [await op(provider, key, "capture") for _ in range(2)]
    refunds = [await op(provider, key, "refund") for _ in range(2)]
    void = await op(provider, key, "void")
    capture_again = await op(provider, key, "capture")

    assert [c.json() for c in captures] == [{"status": "captured"}] * 2
    assert [r.json() for r in refunds] == [{"status": "refunded", "amount_cents": 1250}] * 2
    assert (void.status_code, void.json()) == (409, {"status": "refunded"})
    assert (capture_again.status_code, capture_again.json()) == (409, {"status": "refunded"})
    assert await provider.ledger(key) == [("authorize", 1250), ("capture", 1250), ("refund", 1250)]


async def test_void_releases_an_authorisation_once_and_a_captured_one_is_refused(
    provider: Provider, key: str
) -> None:
    captured = str(uuid.uuid4())
    await authorize(provider, key)
    await authorize(provider, captured)
    await op(provider, captured, "capture")

    voids = [await op(provider, key, "void") for _ in range(2)]
    capture = await op(provider, key, "capture")
    refused = await op(provider, captured, "void")

    assert [(v.status_code, v.json()) for v in voids] == [(200, {"status": "voided"})] * 2
    assert (capture.status_code, capture.json()) == (409, {"status": "voided"})
    assert (refused.status_code, refused.json()) == (409, {"status": "captured"})
    assert await provider.ledger(key) == [("authorize", 1250), ("void", 1250)]


async def test_a_void_before_any_authorisation_leaves_a_tombstone_no_retry_can_pass(
    provider: Provider, key: str
) -> None:
    void = await op(provider, key, "void")
    late = await authorize(provider, key)
    flaky_late = await authorize(provider, key, token="pm_card_flaky")

    assert (void.status_code, void.json()) == (200, {"status": "voided"})
    assert (late.status_code, late.json()) == (409, {"status": "voided"})
    assert flaky_late.status_code == 409
    assert await provider.ledger(key) == []


async def test_refunding_an_uncaptured_authorisation_releases_it_and_reports_it_refunded(
    provider: Provider, key: str
) -> None:
    await authorize(provider, key, amount=990)

    refund = await op(provider, key, "refund")

    assert (refund.status_code, refund.json()) == (
        200,
        {"status": "refunded", "amount_cents": 990},
    )
    # Nothing was captured, so nothing counts as refunded money: the hold is released.
    assert await provider.ledger(key) == [("authorize", 990), ("void", 990)]


async def test_unknown_keys(provider: Provider, key: str) -> None:
    assert (await op(provider, key, "capture")).status_code == 404
    assert (await op(provider, key, "refund")).status_code == 404
    assert (await provider.client.get(f"/v1/authorizations/{key}")).status_code == 404


async def test_concurrent_repeats_of_one_key_make_one_authorisation(
    provider: Provider, key: str
) -> None:
    replies = await asyncio.gather(*(authorize(provider, key) for _ in range(10)))

    assert {r.status_code for r in replies} == {200}
    assert await provider.ledger(key) == [("authorize", 1250)]


async def test_concurrent_captures_of_one_key_make_one_capture(
    provider: Provider, key: str
) -> None:
    await authorize(provider, key)
    replies = await asyncio.gather(*(op(provider, key, "capture") for _ in range(10)))

    assert {(r.status_code, r.json()["status"]) for r in replies} == {(200, "captured")}
    assert await provider.ledger(key) == [("authorize", 1250), ("capture", 1250)]


async def test_the_ledger_refuses_a_second_entry_of_a_kind_for_a_key(
    provider: Provider, key: str
) -> None:
    await authorize(provider, key)

    with pytest.raises(asyncpg.UniqueViolationError):
        await provider.db.execute(
            "INSERT INTO ledger (idempotency_key, kind, amount_cents, currency)"
            " VALUES ($1, 'authorize', 1250, 'EUR')",
            key,
        )
    everything = (await provider.client.get("/v1/ledger")).json()["entries"]
    assert {"idempotency_key", "kind", "amount_cents", "currency", "at"} == set(everything[0])


async def test_health_and_readiness(provider: Provider) -> None:
    assert (await provider.client.get("/healthz")).json() == {"status": "ok"}
    ready = await provider.client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


@pytest.mark.slow
async def test_a_killed_provider_remembers_every_key_after_its_restart(
    provider: Provider, key: str
) -> None:
    await authorize(provider, key, token="pm_card_flaky")  # attempt 1 of the flaky key

    await provider.kill()
    await provider.start()
    second = await authorize(provider, key, token="pm_card_flaky")
    third = await authorize(provider, key, token="pm_card_flaky")

    assert second.status_code == 503
    assert third.json() == {"status": "authorized"}
    assert await provider.ledger(key) == [("authorize", 1250)]
