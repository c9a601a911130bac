"""Register, login and /users/me through the gateway, against a real service-user."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

PROBLEM = "application/problem+json"


def unique_email() -> str:
    return f"ada.{uuid.uuid4().hex[:12]}@example.com"


def field_names(reply: httpx.Response) -> set[str]:
    assert reply.headers["content-type"].startswith(PROBLEM), reply.text
    return {error["field"] for error in reply.json()["errors"]}


async def test_register_login_and_me_round_trip(api: httpx.AsyncClient) -> None:
    email = unique_email()
    registered = await api.post(
        "/api/v1/register",
        json={"email": email, "password": "long enough pw", "full_name": "Ada Lovelace"},
    )
    assert registered.status_code == 201, registered.text
    user = registered.json()
    assert user["email"] == email
    assert user["full_name"] == "Ada Lovelace"
    assert user["role"] == "customer"
    assert uuid.UUID(user["id"])
    assert "password" not in user

    login = await api.post("/api/v1/login", json={"email": email, "password": "long enough pw"})
    assert login.status_code == 200, login.text
    token = login.json()
    assert token["token_type"] == "bearer"
    assert token["expires_in"] > 0

    me = await api.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert me.status_code == 200, me.text
    assert me.json() == user


async def test_login_accepts_the_email_in_another_case(api: httpx.AsyncClient) -> None:
    email = unique_email()
    await api.post(
        "/api/v1/register", json={"email": email, "password": "long enough pw", "full_name": "A"}
    )
    reply = await api.post(
        "/api/v1/login", json={"email": email.upper(), "password": "long enough pw"}
    )
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("variant", [str.upper, str.title])
async def test_duplicate_email_in_any_case_is_409(api: httpx.AsyncClient, variant: Any) -> None:
    email = unique_email()
    body = {"email": email, "password": "long enough pw", "full_name": "Ada"}
    assert (await api.post("/api/v1/register", json=body)).status_code == 201
    again = await api.post("/api/v1/register", json={**body, "email": variant(email)})
    assert again.status_code == 409, again.text
    assert again.headers["content-type"].startswith(PROBLEM)
    assert again.json()["status"] == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": "long enough pw", "full_name": "A"}, "email"),
        ({"email": "a@example.com", "password": "short", "full_name": "A"}, "password"),
        ({"email": "a@example.com", "password": "x" * 129, "full_name": "A"}, "password"),
        ({"email": "a@example.com", "password": "long enough pw", "full_name": ""}, "full_name"),
        ({"password": "long enough pw", "full_name": "A"}, "email"),
        ({"email": "a@example.com", "full_name": "A"}, "password"),
        ({"email": "a@example.com", "password": "long enough pw"}, "full_name"),
        ({"email": 42, "password": "long enough pw", "full_name": "A"}, "email"),
        (
            {"email": "a@example.com", "password": "long enough pw", "full_name": "A\u0000B"},
            "full_name",
        ),
    ],
    ids=[
        "bad-email",
        "short-password",
        "long-password",
        "empty-name",
        "missing-email",
        "missing-password",
        "missing-name",
        "email-not-a-string",
        "nul-in-name",
    ],
)
async def test_invalid_registration_is_422_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    reply = await api.post("/api/v1/register", json=body)
    assert reply.status_code == 422, reply.text
    assert field in field_names(reply)


async def test_lone_surrogate_escape_in_a_string_is_422_not_500(api: httpx.AsyncClient) -> None:
    # Valid JSON, but no UTF-8 text: it could not be passed on in a protobuf string.
    body = b'{"email": "a@example.com", "password": "long \\ud800 pw", "full_name": "A"}'
    reply = await api.post(
        "/api/v1/register", content=body, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422, reply.text
    assert field_names(reply) == {"password"}


async def test_non_json_body_is_422_not_500(api: httpx.AsyncClient) -> None:
    reply = await api.post(
        "/api/v1/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422, reply.text
    assert field_names(reply) == {"body"}


async def test_json_array_body_is_422_not_500(api: httpx.AsyncClient) -> None:
    reply = await api.post("/api/v1/login", json=[{"email": "a@example.com"}])
    assert reply.status_code == 422, reply.text
    assert field_names(reply) == {"body"}


async def test_unknown_email_and_wrong_password_get_the_same_401(api: httpx.AsyncClient) -> None:
    email = unique_email()
    await api.post(
        "/api/v1/register", json={"email": email, "password": "long enough pw", "full_name": "A"}
    )
    wrong = await api.post("/api/v1/login", json={"email": email, "password": "wrong password"})
    unknown = await api.post(
        "/api/v1/login", json={"email": unique_email(), "password": "wrong password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert wrong.headers["www-authenticate"] == "Bearer"


async def test_sixth_failed_login_is_429_even_with_the_right_password(
    api: httpx.AsyncClient,
) -> None:
    email = unique_email()
    await api.post(
        "/api/v1/register", json={"email": email, "password": "long enough pw", "full_name": "A"}
    )
    for _ in range(5):
        failed = await api.post("/api/v1/login", json={"email": email, "password": "nope nope"})
        assert failed.status_code == 401, failed.text
    throttled = await api.post("/api/v1/login", json={"email": email, "password": "long enough pw"})
    assert throttled.status_code == 429, throttled.text
    assert throttled.headers["content-type"].startswith(PROBLEM)
    # When to try again: the rest of service-user's 15-minute window, in whole seconds, rounded
    # up, as the header and as the problem's member alike.
    retry_after = throttled.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 890 < int(retry_after) <= 900
    assert throttled.json()["retry_after_seconds"] == int(retry_after)


async def test_a_refused_login_that_is_not_throttling_carries_no_retry_after(
    api: httpx.AsyncClient,
) -> None:
    wrong = await api.post(
        "/api/v1/login", json={"email": unique_email(), "password": "wrong password"}
    )
    assert wrong.status_code == 401
    assert "retry-after" not in wrong.headers
    assert "retry_after_seconds" not in wrong.json()


async def test_no_password_or_token_reaches_any_log_line(
    api: httpx.AsyncClient, platform: Any
) -> None:
    email, password = unique_email(), "Very-Distinct-Passw0rd"
    await api.post(
        "/api/v1/register", json={"email": email, "password": password, "full_name": "A"}
    )
    token = (await api.post("/api/v1/login", json={"email": email, "password": password})).json()[
        "access_token"
    ]
    await api.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    await api.post("/api/v1/login", json={"email": email, "password": password + "x"})

    lines = platform.log_lines()
    assert any('"http_request"' in line for line in lines), "the gateway logged no request"
    leaked = [line for line in lines if password in line or token in line]
    assert leaked == []
    # The signature alone must not leak either (a token split or truncated in a message).
    signature = token.rsplit(".", 1)[1]
    assert [line for line in lines if signature in line] == []
