"""POST /api/v1/register and POST /api/v1/login (service-user)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api_gateway.deps import UpstreamsDep
from api_gateway.errors import problems
from api_gateway.representations import user_json
from api_gateway.schemas import LoginIn, RegisterIn, TokenOut, UserOut
from ecommerce.user.v1 import user_pb2

router = APIRouter(prefix="/api/v1", tags=["auth"])


@router.post(
    "/register",
    status_code=201,
    response_model=UserOut,
    summary="Create a customer account",
    responses=problems(409, 413, 422, 503, 504),
)
async def register(body: RegisterIn, upstreams: UpstreamsDep) -> dict[str, Any]:
    reply = await upstreams.users.Register(
        user_pb2.RegisterRequest(
            email=body.email, password=body.password, full_name=body.full_name
        ),
        timeout=upstreams.timeout,
    )
    return user_json(reply.user)


@router.post(
    "/login",
    response_model=TokenOut,
    summary="Exchange email and password for a bearer token",
    description="401 is the same for an unknown email and a wrong password; after repeated "
    "failures the email is throttled (429) even for the right password.",
    responses=problems(401, 413, 422, 429, 503, 504),
)
async def login(body: LoginIn, upstreams: UpstreamsDep) -> dict[str, Any]:
    reply = await upstreams.users.Login(
        user_pb2.LoginRequest(email=body.email, password=body.password),
        timeout=upstreams.timeout,
    )
    return {
        "access_token": reply.access_token,
        "token_type": "bearer",
        "expires_in": reply.expires_in,
    }
