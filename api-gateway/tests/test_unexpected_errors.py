"""A bug inside a route is a bare 500 problem that still carries the request id, so the caller can
report it and operators can find its log line; nothing of the exception reaches the client."""

from __future__ import annotations

import httpx

from api_gateway.app import create_app
from api_gateway.config import GatewaySettings


async def test_unhandled_error_is_a_500_problem_with_the_request_id_and_no_internals() -> None:
    app = create_app(GatewaySettings())

    @app.get("/api/v1/broken")
    async def broken() -> None:
        raise RuntimeError("connection to 10.1.2.3:5432 refused")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        reply = await client.get("/api/v1/broken", headers={"X-Request-ID": "bug-report-7"})

    assert reply.status_code == 500
    assert reply.headers["x-request-id"] == "bug-report-7"
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "internal error",
    }
    assert "10.1.2.3" not in reply.text
