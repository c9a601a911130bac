"""Annotated dependencies the routes declare: the caller (CurrentUser, AdminUser, ClientAddress)
and the shared per-process objects (upstream stubs, token verifier, product micro-cache)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBearer

from api_gateway.forwarded import TrustedProxies
from api_gateway.product_cache import ProductMicroCache
from api_gateway.upstreams import Upstreams
from chassis.auth import InvalidToken, Principal, SigningKeysUnavailable, TokenVerifier

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def get_upstreams(request: Request) -> Upstreams:
    upstreams: Upstreams = request.app.state.upstreams
    return upstreams


async def get_product_cache(request: Request) -> ProductMicroCache:
    cache: ProductMicroCache = request.app.state.product_cache
    return cache


UpstreamsDep = Annotated[Upstreams, Depends(get_upstreams)]
ProductCacheDep = Annotated[ProductMicroCache, Depends(get_product_cache)]


class BearerUser(HTTPBearer):
    """The caller, from the `Authorization: Bearer` token, verified. It is FastAPI's HTTP bearer
    scheme itself (OpenAPI shows the same `HTTPBearer` scheme), so a route that needs the caller
    solves one dependency, not a scheme and a verifier on top of it: each level FastAPI solves
    costs about a twentieth of a short request."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        credentials = await super().__call__(request)
        if credentials is None:
            raise HTTPException(401, "missing bearer token", headers=_CHALLENGE)
        verifier: TokenVerifier = request.app.state.token_verifier
        try:
            return await verifier.verify(credentials.credentials)
        except InvalidToken as exc:
            raise HTTPException(401, exc.message, headers=_CHALLENGE) from exc
        except SigningKeysUnavailable as exc:
            raise HTTPException(
                503, "token verification keys are unavailable, retry later"
            ) from exc


current_user = BearerUser(
    auto_error=False,
    scheme_name="HTTPBearer",
    description="Access token from POST /api/v1/login",
)
CurrentUser = Annotated[Principal, Depends(current_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise HTTPException(403, "this action needs the admin role")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]


async def client_address(request: Request) -> str:
    """Service-user's per-client throttling key: the TCP peer's address, or the shopper's a
    trusted proxy forwarded (`forwarded.py`); an untrusted peer's X-Forwarded-For is ignored."""
    peer = request.client.host if request.client else "unknown"
    proxies: TrustedProxies = request.app.state.trusted_proxies
    return proxies.client_of(peer, request.headers.getlist("x-forwarded-for"))


ClientAddress = Annotated[str, Depends(client_address)]
