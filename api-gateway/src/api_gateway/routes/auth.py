"""POST /api/v1/register and POST /api/v1/login (service-user)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api_gateway.deps import ClientAddress, UpstreamsDep
from api_gateway.errors import problems
from api_gateway.representations import user_json
from api_gateway.schemas import LoginIn, RegisterIn, TokenOut, UserOut
from chassis.auth import client_metadata
from ecommerce.user.v1 import user_pb2

router = APIRouter(prefix="/api/v1", tags=["auth"])


@router.post(
    "/register",
    status_code=201,
    response_model=UserOut,
    summary="Create a customer account",
    responses=problems(409, 413, 422, 429, 503, 504),
)
async def register(
    body: RegisterIn, upstreams: UpstreamsDep, client: ClientAddress
) -> dict[str, Any]:
    reply = await upstreams.users.Register(
        user_pb2.RegisterRequest(
            email=body.email, password=body.password, full_name=body.full_name
        ),
        metadata=client_metadata(client),
        timeout=upstreams.timeout,
    )
    return user_json(reply.user)


@router.post(
    "/login",
    response_model=TokenOut,
    summary="Exchange email and password for a bearer token",
    description="401 is the same for an unknown email and a wrong password. After repeated "
    "failures for an email from one client, that client gets 429 for that email, even with the "
    "right password, while other clients do not; an email failing from many clients is answered "
    "more slowly (at most a second), never locked. Too many logins from one client: 429; too many "
    "sign-ins in progress on the server: 503. A 429 says when to try again (`Retry-After`, whole "
    "seconds). The token is sent with `Cache-Control: no-store`.",
    responses=problems(401, 413, 422, 429, 503, 504),
)
async def login(
    body: LoginIn, upstreams: UpstreamsDep, client: ClientAddress, response: Response
) -> dict[str, Any]:
    reply = await upstreams.users.Login(
        user_pb2.LoginRequest(email=body.email, password=body.password),
        metadata=client_metadata(client),
        timeout=upstreams.timeout,
    )
    # A bearer token must not be kept by any cache between the caller and this gateway.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return {
        "access_token": reply.access_token,
        "token_type": "bearer",
        "expires_in": reply.expires_in,
    }
