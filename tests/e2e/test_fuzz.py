"""Schemathesis over the whole platform's OpenAPI document, every route including checkout and
orders (which need service-order, absent from the gateway's own fuzz platform): whatever the
input, no 5xx, and every answer has a documented status, media type and schema. A bounded number
of examples per route keeps it a few dozen seconds."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import Platform
from .shop import PASSWORD

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_ROUTE = 20


@pytest.fixture
def shopper_auth(platform: Platform) -> dict[str, str]:
    """A shopper with a product in the cart, so checkout has something to order."""
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        email = f"fuzz-{id(client)}@example.com"
        client.post(
            "/api/v1/register", json={"email": email, "password": PASSWORD, "full_name": "Fuzz"}
        )
        token = client.post("/api/v1/login", json={"email": email, "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        product = client.get("/api/v1/products", params={"limit": 1}).json()["items"]
        if product:
            client.post(
                "/api/v1/cart/items",
                headers=headers,
                json={"product_id": product[0]["id"], "quantity": 1},
            )
        return headers


def test_fuzzed_requests_to_every_route_get_documented_answers_and_never_a_5xx(
    platform: Platform, shopper_auth: dict[str, str]
) -> None:
    schema = schemathesis.openapi.from_url(platform.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # /readyz answers a documented 503 whenever an upstream is down: not a fault to fuzz for.
    operations = [op for op in operations if op.path != "/readyz"]
    paths = {op.path for op in operations}
    assert {"/api/v1/checkout", "/api/v1/orders", "/api/v1/orders/{order_id}/cancel"} <= paths

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_ROUTE,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            case.call_and_validate(headers=shopper_auth, checks=CHECKS)

        fuzz()
