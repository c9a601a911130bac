"""The ceiling the gateway is compared with: a bare FastAPI endpoint of the same shape as
GET /api/v1/products/{id}, no middleware, no upstream, served with the same uvicorn flags."""

from __future__ import annotations

from uuid import UUID

from fastapi import FastAPI

app = FastAPI()

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
