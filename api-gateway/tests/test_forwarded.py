"""Who the client is behind proxies (GATEWAY_TRUSTED_PROXIES): the TCP peer unless it is trusted,
then the right-most X-Forwarded-For hop that no trusted proxy sits at. Specified on the rule
itself, then end to end on the login throttle, which is keyed by that address."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from api_gateway.config import GatewaySettings
from api_gateway.forwarded import TrustedProxies, parse_networks

from .conftest import MakeCustomer

STOREFRONT = TrustedProxies(parse_networks("127.0.0.5, 10.0.0.0/8, fd00::/8"))


def test_without_trusted_proxies_the_peer_is_the_client_whatever_it_forwards() -> None:
    assert TrustedProxies().client_of("127.0.0.5", ["203.0.113.7"]) == "127.0.0.5"


def test_an_untrusted_peer_cannot_choose_its_address() -> None:
    assert STOREFRONT.client_of("198.51.100.9", ["203.0.113.7"]) == "198.51.100.9"


def test_a_trusted_peer_names_its_shopper() -> None:
    assert STOREFRONT.client_of("127.0.0.5", ["203.0.113.7"]) == "203.0.113.7"


def test_the_right_most_untrusted_hop_wins_so_a_shopper_cannot_prepend_a_lie() -> None:
    # The shopper sent "1.1.1.1" itself; the storefront appended the address it saw.
    assert STOREFRONT.client_of("127.0.0.5", ["1.1.1.1, 203.0.113.7"]) == "203.0.113.7"


def test_trusted_hops_are_skipped_across_several_headers() -> None:
    chain = ["1.1.1.1, 203.0.113.7", "10.1.2.3"]
    assert STOREFRONT.client_of("127.0.0.5", chain) == "203.0.113.7"


def test_every_hop_trusted_gives_the_left_most() -> None:
    assert STOREFRONT.client_of("127.0.0.5", ["10.0.0.1, 10.0.0.2"]) == "10.0.0.1"


@pytest.mark.parametrize(
    "forwarded",
    [["not-an-address"], ["203.0.113.7, "], ["203.0.113.7:5000"], ["unknown, 10.0.0.2"], [""]],
)
def test_a_malformed_hop_stops_at_the_last_address_a_trusted_proxy_vouched_for(
    forwarded: list[str],
) -> None:
    expected = "10.0.0.2" if forwarded == ["unknown, 10.0.0.2"] else "127.0.0.5"
    assert STOREFRONT.client_of("127.0.0.5", forwarded) == expected


def test_ipv6_and_ipv4_mapped_peers_are_recognised() -> None:
    assert STOREFRONT.client_of("fd00::1", ["2001:db8::7"]) == "2001:db8::7"
    assert STOREFRONT.client_of("::ffff:127.0.0.5", ["203.0.113.7"]) == "203.0.113.7"


def test_the_setting_takes_addresses_and_networks_and_refuses_anything_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_TRUSTED_PROXIES", " 127.0.0.1 ,10.0.0.0/8,::1")
    assert [str(n) for n in GatewaySettings().trusted_proxy_networks] == [
        "127.0.0.1/32",
        "10.0.0.0/8",
        "::1/128",
    ]
    monkeypatch.setenv("GATEWAY_TRUSTED_PROXIES", "")
    assert GatewaySettings().trusted_proxy_networks == ()
    monkeypatch.setenv("GATEWAY_TRUSTED_PROXIES", "127.0.0.1,storefront")
    with pytest.raises(ValueError, match="'storefront' is not an IP address"):
        GatewaySettings()


async def fail_login(client: httpx.AsyncClient, email: str, times: int, **headers: str) -> None:
    for _ in range(times):
        reply = await client.post(
            "/api/v1/login", json={"email": email, "password": "wrong password"}, headers=headers
        )
        assert reply.status_code == 401, reply.text


async def login_status(client: httpx.AsyncClient, email: str, password: str, via: str) -> int:
    reply = await client.post(
        "/api/v1/login",
        json={"email": email, "password": password},
        headers={"X-Forwarded-For": via},
    )
    return reply.status_code


def client_from(url: str, source: str) -> httpx.AsyncClient:
    """A client whose connections leave from `source` (all of 127.0.0.0/8 is this machine)."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=10)


@pytest.mark.slow
async def test_a_client_that_is_no_trusted_proxy_cannot_escape_its_throttle_by_forwarding(
    extra_gateway: Callable[..., Awaitable[str]], make_customer: MakeCustomer
) -> None:
    url = await extra_gateway(GATEWAY_TRUSTED_PROXIES="127.0.0.5")
    victim = await make_customer()
    async with client_from(url, "127.0.0.6") as attacker:
        for n in range(5):
            await fail_login(attacker, victim.email, 1, **{"X-Forwarded-For": f"198.51.100.{n}"})
        # A fresh "address" every time changed nothing: the key was the peer all along.
        assert await login_status(attacker, victim.email, victim.password, "198.51.100.99") == 429


@pytest.mark.slow
async def test_through_a_trusted_proxy_the_login_throttle_holds_per_shopper_not_per_proxy(
    extra_gateway: Callable[..., Awaitable[str]], make_customer: MakeCustomer
) -> None:
    url = await extra_gateway(GATEWAY_TRUSTED_PROXIES="127.0.0.5")
    victim = await make_customer()
    async with client_from(url, "127.0.0.5") as storefront:
        # One shopper behind the proxy fails five times (prepending lies to its own header).
        for n in range(5):
            await fail_login(
                storefront, victim.email, 1, **{"X-Forwarded-For": f"10.9.9.{n}, 203.0.113.7"}
            )
        assert await login_status(storefront, victim.email, victim.password, "203.0.113.7") == 429
        assert (
            await login_status(storefront, victim.email, victim.password, "1.2.3.4, 203.0.113.7")
            == 429
        )
        # The owner, another shopper behind the same proxy, is not locked out.
        assert await login_status(storefront, victim.email, victim.password, "203.0.113.8") == 200
