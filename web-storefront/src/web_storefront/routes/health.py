"""/healthz (the process answers) and /readyz (sessions can be kept and the gateway answers)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from web_storefront.gateway import GatewayClient
from web_storefront.sessions import SessionStore

router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    store: SessionStore = request.app.state.sessions
    gateway: GatewayClient = request.app.state.gateway
    timeout = request.app.state.settings.redis_timeout_seconds
    failing = []
    try:
        async with asyncio.timeout(timeout):
            await store.check()
    except Exception:  # any failure means "not ready"; the name is all the probe needs
        failing.append("redis")
    if not await gateway.alive():
        failing.append("gateway")
    if failing:
        return JSONResponse({"status": "unavailable", "failing": failing}, status_code=503)
    return JSONResponse({"status": "ok"})
