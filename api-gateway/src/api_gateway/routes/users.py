"""GET /api/v1/users/me: the caller's own account (service-user)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api_gateway.deps import CurrentUser, UpstreamsDep
from api_gateway.errors import problems
from api_gateway.representations import user_json
from api_gateway.schemas import UserOut
from chassis.auth import bearer_metadata
from ecommerce.user.v1 import user_pb2

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.get(
    "/me",
    response_model=UserOut,
    summary="The account of the token's owner",
    responses=problems(401, 404, 503, 504),
)
async def me(user: CurrentUser, upstreams: UpstreamsDep) -> dict[str, Any]:
    reply = await upstreams.users.GetUser(
        user_pb2.GetUserRequest(id=user.user_id),
        metadata=bearer_metadata(user.token),
        timeout=upstreams.timeout,
    )
    return user_json(reply.user)
