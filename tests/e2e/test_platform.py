"""Black-box tests of the running platform (root Procfile under honcho), over REST only."""

from __future__ import annotations

import contextlib
import time
import uuid

import httpx
import pytest


def login(client: httpx.Client, email: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def register(client: httpx.Client, email: str, password: str = "correct horse battery") -> dict:
    response = client.post(
        "/api/v1/register", json={"email": email, "password": password, "full_name": "E2E Shopper"}
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_procfile_platform_is_ready_and_reports_health(platform) -> None:
    with httpx.Client(base_url=platform.base_url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 404  # never on the public port
    metrics_port = platform.env["GATEWAY_METRICS_PORT"]
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "http_requests_total" in metrics.text


def test_shopper_registers_logs_in_and_reads_own_profile(platform) -> None:
    email = f"Shopper-{uuid.uuid4().hex[:8]}@Example.com"
    with httpx.Client(base_url=platform.base_url, timeout=10) as client:
        user = register(client, email)
        assert user["email"] == email.lower()
        assert user["role"] == "customer"
        duplicate = client.post(
            "/api/v1/register",
            json={"email": email.upper(), "password": "another password", "full_name": "Twin"},
        )
        assert duplicate.status_code == 409
        assert duplicate.headers["content-type"].startswith("application/problem+json")
        headers = login(client, email.upper(), "correct horse battery")
        me = client.get("/api/v1/users/me", headers=headers)
        assert me.status_code == 200
        assert me.json()["id"] == user["id"]
        assert client.get("/api/v1/users/me").status_code == 401


def test_admin_price_change_shows_in_shoppers_cart(platform, procfile) -> None:
    with httpx.Client(base_url=platform.base_url, timeout=10) as client:
        admin = login(client, procfile.admin_email, procfile.admin_password)
        sku = f"E2E-{uuid.uuid4().hex[:10]}"
        created = client.post(
            "/api/v1/products",
            headers=admin,
            json={
                "sku": sku,
                "name": "E2E Kettle",
                "description": "boils",
                "price_cents": 2500,
                "stock": 7,
            },
        )
        assert created.status_code == 201, created.text
        product = created.json()
        assert client.get(f"/api/v1/products/{product['id']}").json()["price_cents"] == 2500

        email = f"cart-{uuid.uuid4().hex[:8]}@example.com"
        register(client, email)
        shopper = login(client, email, "correct horse battery")
        forbidden = client.patch(
            f"/api/v1/products/{product['id']}", headers=shopper, json={"price_cents": 1}
        )
        assert forbidden.status_code == 403

        added = client.post(
            "/api/v1/cart/items", headers=shopper, json={"product_id": product["id"], "quantity": 2}
        )
        assert added.status_code == 200, added.text
        assert added.json()["total_cents"] == 5000
        too_many = client.post(
            "/api/v1/cart/items", headers=shopper, json={"product_id": product["id"], "quantity": 6}
        )
        assert too_many.status_code == 409

        patched = client.patch(
            f"/api/v1/products/{product['id']}", headers=admin, json={"price_cents": 1999}
        )
        assert patched.status_code == 200, patched.text
        assert client.get(f"/api/v1/products/{product['id']}").json()["price_cents"] == 1999
        cart = client.get("/api/v1/cart", headers=shopper).json()
        assert cart["items"][0]["unit_price_cents"] == 1999
        assert cart["total_cents"] == 2 * 1999

        assert client.delete("/api/v1/cart", headers=shopper).status_code == 204
        assert client.get("/api/v1/cart", headers=shopper).json()["items"] == []


@pytest.mark.slow
def test_readyz_is_503_while_service_user_is_down_and_200_once_it_is_up(
    e2e_env: dict[str, str], procfile
) -> None:
    env = dict(e2e_env)
    # Only the gateway and service-user lines of the Procfile; the other upstreams are switched off.
    env["PRODUCT_SERVICE_ADDR"] = ""
    env["CART_SERVICE_ADDR"] = ""
    env["ORDER_SERVICE_ADDR"] = ""
    env["GATEWAY_PORT"] = str(procfile.free_port())
    env["GATEWAY_METRICS_PORT"] = str(procfile.free_port())
    env["USER_GRPC_PORT"] = str(procfile.free_port())
    env["USER_SERVICE_ADDR"] = f"127.0.0.1:{env['USER_GRPC_PORT']}"
    base_url = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    gateway = procfile.start(env, "api-gateway")
    user = None
    try:
        _wait_status(base_url, gateway, 503)
        body = httpx.get(f"{base_url}/readyz", timeout=5).json()
        assert "user" in str(body).lower()
        user = procfile.start(env, "service-user")
        procfile.wait_ready(base_url, user)
        user.stop()
        _wait_status(base_url, gateway, 503)
    finally:
        if user is not None:
            user.stop()
        gateway.stop()


def _wait_status(base_url: str, honcho, status: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last: int | None = None
    while time.monotonic() < deadline:
        assert honcho.proc is not None
        assert honcho.proc.poll() is None, "\n".join(honcho.lines[-30:])
        # The gateway may not listen yet: a refused connection just means "ask again".
        with contextlib.suppress(httpx.TransportError):
            last = httpx.get(f"{base_url}/readyz", timeout=5).status_code
            if last == status:
                return
        time.sleep(0.3)
    raise AssertionError(f"/readyz never answered {status} (last {last})")
