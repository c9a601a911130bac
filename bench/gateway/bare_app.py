"""The ceilings the gateway is compared with, served with the same uvicorn flags:

- `GET /api/v1/products/{id}`: a bare FastAPI endpoint of the same shape, no middleware, no
  upstream;
- `GET /api/v1/users/me`: FastAPI calling one grpc.aio unary method (`UserService.GetUser` on
  `echo_upstream.py`, at `BARE_ECHO_ADDR`) and rendering its answer: the hop the gateway's route
  makes, without token verification, service-user's own checks or its database.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import grpc
from fastapi import FastAPI, Header

from ecommerce.user.v1 import user_pb2, user_pb2_grpc

ECHO_USER_ID = "6f1c1b2e-0000-4000-8000-000000000001"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with grpc.aio.insecure_channel(os.environ.get("BARE_ECHO_ADDR", "127.0.0.1:1")) as ch:
        app.state.users = user_pb2_grpc.UserServiceStub(ch)
        yield


app = FastAPI(lifespan=lifespan)

PRODUCT = {
    "sku": "SKU-000001",
    "name": "Bench lamp",
    "description": "A product body of realistic size for the comparison.",
    "price_cents": 1999,
    "currency": "USD",
    "stock": 42,
}


@app.get("/api/v1/products/{product_id}")
async def get_product(product_id: UUID) -> dict[str, object]:
    return {"id": str(product_id), **PRODUCT}


@app.get("/api/v1/users/me")
async def me(authorization: str = Header("")) -> dict[str, Any]:
    reply = await app.state.users.GetUser(
        user_pb2.GetUserRequest(id=ECHO_USER_ID),
        metadata=(("authorization", authorization),),
        timeout=3,
    )
    user = reply.user
    return {
        "id": user.id,
        "email": user.email,
        "full_name": user.full_name,
        "role": "customer",
        "created_at": user.created_at.ToDatetime().isoformat() + "Z",
    }
