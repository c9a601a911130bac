"""Operational behaviour over real HTTP: health and readiness, metrics by route template,
request ids, body size limits, unknown routes, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import Any

import httpx
import pytest

from chassis.testing.process import ServiceProcess

from .conftest import Platform, start_gateway, wait_http_ok


async def test_healthz_answers_while_the_process_lives(api: httpx.AsyncClient) -> None:
    reply = await api.get("/healthz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}


async def test_readyz_is_200_when_every_upstream_serves(api: httpx.AsyncClient) -> None:
    reply = await api.get("/readyz")
    assert reply.status_code == 200, reply.text


@pytest.mark.slow
async def test_readyz_is_503_naming_service_user_while_it_is_down(
    lone_user_gateway: Any,
) -> None:
    # A private service-user, so stopping it disturbs no other test. Product and cart
    # addresses are empty there: disabled upstreams are not part of readiness.
    async with httpx.AsyncClient(base_url=lone_user_gateway.url, timeout=10) as client:
        assert (await client.get("/readyz")).status_code == 200
        await asyncio.to_thread(lone_user_gateway.users.stop)
        down = await client.get("/readyz")
        assert down.status_code == 503, down.text
        assert down.headers["content-type"].startswith("application/problem+json")
        assert "service-user" in down.json()["detail"]
        assert (await client.get("/healthz")).status_code == 200
        login = await client.post(
            "/api/v1/login", json={"email": "a@example.com", "password": "whatever1"}
        )
        assert login.status_code == 503, login.text
        assert "127.0.0.1" not in login.text  # no upstream address or transport detail leaks
        # A route that needs the disabled product service says so instead of hanging.
        assert (await client.get(f"/api/v1/products/{uuid.uuid4()}")).status_code == 503


async def test_metrics_count_requests_by_route_template_on_their_own_port_only(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    for _ in range(2):
        await api.get(f"/api/v1/products/{uuid.uuid4()}")
    await api.get(f"/no/such/path/{uuid.uuid4()}")
    assert (await api.get("/metrics")).status_code == 404  # not on the public port
    text = (await api.get(platform.metrics_url)).text
    assert (
        'http_requests_total{method="GET",route="/api/v1/products/{product_id}",status="404"}'
        in text
    )
    assert 'http_request_duration_seconds_bucket{le="0.005",method="GET",route=' in text
    assert 'route="<unmatched>"' in text
    assert "/no/such/path" not in text


async def test_request_id_is_echoed_when_valid(api: httpx.AsyncClient) -> None:
    reply = await api.get("/healthz", headers={"X-Request-ID": "req-123.abc"})
    assert reply.headers["x-request-id"] == "req-123.abc"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon"])
async def test_invalid_request_id_is_replaced_by_a_generated_one(
    api: httpx.AsyncClient, bad: str
) -> None:
    reply = await api.get("/healthz", headers={"X-Request-ID": bad})
    generated = reply.headers["x-request-id"]
    assert generated != bad
    assert uuid.UUID(generated)


async def test_request_id_is_in_the_access_log_line(api: httpx.AsyncClient, platform: Any) -> None:
    request_id = f"trace-me-{uuid.uuid4().hex}"
    await api.get(f"/api/v1/products/{uuid.uuid4()}", headers={"X-Request-ID": request_id})
    gateway: ServiceProcess = platform.processes["api-gateway"]
    entry = await asyncio.to_thread(
        gateway.wait_for_log, "http_request", 10.0, request_id=request_id
    )
    assert entry["method"] == "GET"
    assert entry["route"] == "/api/v1/products/{product_id}"
    assert entry["status"] == 404
    assert entry["duration_ms"] >= 0


async def test_body_over_the_limit_is_413(api: httpx.AsyncClient) -> None:
    reply = await api.post("/api/v1/login", content=b"{" + b" " * (1024 * 1024 + 10) + b"}")
    assert reply.status_code == 413, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")


async def test_chunked_body_over_the_limit_is_413(api: httpx.AsyncClient) -> None:
    async def chunks() -> Any:
        for _ in range(20):
            yield b" " * 65536

    reply = await api.post(
        "/api/v1/login", content=chunks(), headers={"content-type": "application/json"}
    )
    assert reply.status_code == 413, reply.text
    assert reply.json()["status"] == 413


async def test_unknown_route_is_a_404_problem(api: httpx.AsyncClient) -> None:
    reply = await api.get("/api/v1/nothing-here")
    assert reply.status_code == 404
    assert reply.headers["content-type"].startswith("application/problem+json")


async def test_openapi_documents_every_route_with_its_problems(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    paths = document["paths"]
    expected = {
        ("post", "/api/v1/register"): {"201", "409", "422"},
        ("post", "/api/v1/login"): {"200", "401", "422", "429"},
        ("get", "/api/v1/users/me"): {"200", "401"},
        ("get", "/api/v1/products"): {"200", "422"},
        ("get", "/api/v1/products/{product_id}"): {"200", "404", "422"},
        ("post", "/api/v1/products"): {"201", "401", "403", "409", "422"},
        ("patch", "/api/v1/products/{product_id}"): {"200", "403", "404", "422"},
        ("get", "/api/v1/cart"): {"200", "401"},
        ("post", "/api/v1/cart/items"): {"200", "404", "409", "422"},
        ("put", "/api/v1/cart/items/{product_id}"): {"200", "404", "409", "422"},
        ("delete", "/api/v1/cart/items/{product_id}"): {"200", "404"},
        ("delete", "/api/v1/cart"): {"204", "401"},
    }
    for (method, path), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert statuses <= set(responses), (method, path, sorted(responses))
        for status in statuses - {"200", "201", "204"}:
            content = responses[status]["content"]
            assert content["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
    assert "HTTPValidationError" not in document["components"]["schemas"]
    # A throttled login says when to come back: Retry-After, and the same in the problem.
    throttled = paths["/api/v1/login"]["post"]["responses"]["429"]
    assert throttled["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 0}
    problem = document["components"]["schemas"]["Problem"]["properties"]
    assert "retry_after_seconds" in problem
    assert (await api.get("/docs")).status_code == 200


async def test_openapi_documents_problems_only_as_problem_json_and_500_and_504_everywhere(
    api: httpx.AsyncClient,
) -> None:
    # Every /api/v1 route calls an upstream: its INTERNAL is a 500, its deadline a 504.
    document = (await api.get("/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if path.startswith("/api/v1/"):
                assert {"500", "504"} <= set(responses), (method, path, sorted(responses))
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    assert set(response["content"]) == {"application/problem+json"}, (
                        method,
                        path,
                        status,
                    )


@pytest.mark.slow
async def test_upstream_deadline_is_a_504_problem(extra_gateway: Any) -> None:
    url = await extra_gateway(GATEWAY_RPC_TIMEOUT_SECONDS="0.000001")
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        reply = await client.post(
            "/api/v1/login", json={"email": "a@example.com", "password": "whatever1"}
        )
    assert reply.status_code == 504, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")


@pytest.mark.slow
async def test_small_body_limit_setting_is_enforced(extra_gateway: Any) -> None:
    url = await extra_gateway(GATEWAY_MAX_BODY_BYTES="64")
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        small = await client.post("/api/v1/login", json={"email": "a@b.co", "password": "x"})
        large = await client.post("/api/v1/login", json={"email": "a@b.co", "password": "x" * 100})
    assert small.status_code != 413
    assert large.status_code == 413, large.text


@pytest.mark.slow
async def test_sigterm_drains_ready_503_while_every_request_is_still_served(
    platform: Platform,
) -> None:
    """The first SIGTERM turns /readyz to 503 at once, and for the drain delay the gateway still
    serves every request, over new connections too; then it stops on its own."""
    gateway, url = start_gateway(
        {
            "USER_SERVICE_ADDR": platform.user_addr,
            "PRODUCT_SERVICE_ADDR": platform.product_addr,
            "CART_SERVICE_ADDR": "",
            "ORDER_SERVICE_ADDR": "",
            "GATEWAY_SHUTDOWN_DRAIN_DELAY_SECONDS": "4",
        }
    )
    try:
        await wait_http_ok(gateway, url + "/readyz")
        signalled = time.monotonic()
        gateway.popen.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            await asyncio.sleep(0.3)
            ready = await client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert "draining" in ready.json()["detail"]
            assert (await client.get("/healthz")).status_code == 200
            for _ in range(5):
                listed = await client.get("/api/v1/products", params={"limit": 1})
                assert listed.status_code == 200, listed.text
                await asyncio.sleep(0.2)
        assert time.monotonic() - signalled < 4, "the checks above outlasted the drain"
        code = await asyncio.to_thread(gateway.popen.wait, 20)
        assert time.monotonic() - signalled >= 4, "stopped before its drain delay"
        assert code in (0, -signal.SIGTERM), gateway.output_tail()
        assert any(event.get("event") == "draining" for event in gateway.logs())
    finally:
        await asyncio.to_thread(gateway.stop)


async def _healthz_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await asyncio.wait_for(reader.readexactly(length), timeout=5)
    return head.split(b"\r\n", 1)[0]


@pytest.mark.slow
async def test_an_idle_keep_alive_connection_outlives_the_clients_own_expiry(
    api: httpx.AsyncClient,
) -> None:
    """httpx drops a pooled connection after 5 s idle, as uvicorn's default did: at that moment
    a request could go out on a connection the server was closing, and fail with nothing wrong.
    The gateway keeps idle connections longer (GATEWAY_KEEP_ALIVE_SECONDS), so the client closes
    first: after 6 s idle the same connection still answers."""
    reader, writer = await asyncio.open_connection(api.base_url.host, api.base_url.port)
    try:
        assert await _healthz_on(reader, writer) == b"HTTP/1.1 200 OK"
        await asyncio.sleep(6.0)
        assert await _healthz_on(reader, writer) == b"HTTP/1.1 200 OK"
    finally:
        writer.close()
