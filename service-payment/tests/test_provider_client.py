"""The provider's HTTP client (`HttpPaymentProvider`) against real sockets: what each kind of
answer, or of silence, becomes (an `Answer`, `ProviderUnavailable` or `ProviderRefused`), and
that every call ends within its timeout whatever the other side does."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from payment_service.domain import Answer
from payment_service.provider import HttpPaymentProvider, ProviderRefused, ProviderUnavailable

Reply = Callable[[bytes], Awaitable[bytes | None]]  # the request's head -> raw answer or silence


def http(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class Server:
    url: str = ""
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0


@asynccontextmanager
async def server(reply: Reply, *, close_after_answer: bool = False) -> AsyncIterator[Server]:
    """A one-behaviour HTTP server on a free port: `reply` answers each request (None: never),
    and the connection is closed after the answer when `close_after_answer`."""
    state = Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                state.requests.append(head + body)
                answer = await reply(head)
                if answer is None:
                    await asyncio.sleep(3600)
                writer.write(answer or b"")
                await writer.drain()
                if close_after_answer:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client closed or reset the connection: this one is done
        finally:
            writer.close()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
    try:
        yield state
    finally:
        listening.close()


def answering(raw: bytes) -> Reply:
    async def reply(_: bytes) -> bytes | None:
        return raw

    return reply


async def authorize(url: str, timeout_seconds: float = 2.0) -> tuple[Answer, str | None]:
    provider = HttpPaymentProvider(url, timeout_seconds=timeout_seconds)
    try:
        return await provider.authorize(
            "key-1", payment_token="pm_card_ok", amount_cents=1250, currency="EUR"
        )
    finally:
        await provider.close()


async def test_an_authorisation_sends_the_intent_and_reads_the_answer() -> None:
    body = json.dumps({"status": "declined", "reason": "card_declined"}).encode()
    async with server(answering(http(200, body))) as provider:
        assert await authorize(provider.url) == (Answer.DECLINED, "card_declined")
    head, _, sent = provider.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/authorizations HTTP/1.1")
    assert json.loads(sent) == {
        "idempotency_key": "key-1",
        "payment_token": "pm_card_ok",
        "amount_cents": 1250,
        "currency": "EUR",
    }


async def test_calls_one_after_another_share_one_kept_alive_connection() -> None:
    async with server(answering(http(200, b'{"status": "captured"}'))) as remote:
        provider = HttpPaymentProvider(remote.url, timeout_seconds=2.0)
        try:
            for _ in range(3):
                assert await provider.capture("key-1") is Answer.CAPTURED
        finally:
            await provider.close()
    assert len(remote.requests) == 3
    assert remote.connections == 1
    assert all(b"POST /v1/authorizations/key-1/capture" in r for r in remote.requests)


@pytest.mark.parametrize(
    "raw",
    [
        http(503, b'{"error": "down"}'),
        http(500, b"oops", "text/plain"),
        http(429, b'{"error": "slow down"}'),
        http(200, b"not json", "text/plain"),
        http(200, b'["a list"]'),
        http(200, b'{"status": "SOMETHING_ELSE"}'),
    ],
    ids=["503", "500", "429", "no-json", "not-an-object", "unknown-status"],
)
async def test_what_is_no_answer_is_unavailable(raw: bytes) -> None:
    async with server(answering(raw)) as remote:
        with pytest.raises(ProviderUnavailable):
            await authorize(remote.url)


async def test_a_refusal_names_its_status_and_a_voided_key_answers_voided() -> None:
    async with server(answering(http(409, b'{"status": "captured"}'))) as remote:
        with pytest.raises(ProviderRefused) as refused:
            await authorize(remote.url)
    assert (refused.value.status_code, refused.value.status) == (409, "captured")
    async with server(answering(http(404, b"gone", "text/plain"))) as remote:
        with pytest.raises(ProviderRefused) as refused:
            await authorize(remote.url)
    assert (refused.value.status_code, refused.value.status) == (404, None)
    async with server(answering(http(409, b'{"status": "voided"}'))) as remote:
        assert await authorize(remote.url) == (Answer.VOIDED, None)


async def test_silence_and_a_closed_port_are_unavailable_within_the_timeout() -> None:
    async def silent(_: bytes) -> bytes | None:
        return None

    async with server(silent) as remote:
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable):
            await authorize(remote.url, timeout_seconds=0.5)
        assert time.monotonic() - started < 3.0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ProviderUnavailable):
        await authorize(f"http://127.0.0.1:{port}", timeout_seconds=0.5)


async def test_a_connection_closed_mid_answer_is_unavailable() -> None:
    partial = b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"sta'
    async with server(answering(partial), close_after_answer=True) as remote:
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable):
            await authorize(remote.url, timeout_seconds=5.0)
        assert time.monotonic() - started < 3.0  # the close ends it, not the timeout
