"""The catalogue (search and paging) and the product page."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from web_storefront.gateway import Problem
from web_storefront.pages import error_page, render, shop_api

router = APIRouter()

PAGE_SIZE = 12
MAX_QUERY = 200


def _page_link(query: str, page_token: str | None) -> str | None:
    if page_token is None:
        return None
    params = {"q": query} if query else {}
    if page_token:
        params["page_token"] = page_token
    return "/?" + urlencode(params) if params else "/"


@router.get("/")
async def catalogue(request: Request, q: str = "", page_token: str = "") -> Response:
    query = q.strip()[:MAX_QUERY]
    error = ""
    try:
        page = await shop_api(request).products(
            query=query, page_token=page_token[:1024], limit=PAGE_SIZE
        )
    except Problem as problem:
        if problem.status != 422:
            raise
        # A page token from an old link: the first page, and why.
        error = "That page of the catalogue no longer exists; here is the first page."
        page = await shop_api(request).products(query=query, page_token="", limit=PAGE_SIZE)
    context: dict[str, Any] = {
        "query": query,
        "products": page.get("items", []),
        "next_link": _page_link(query, page.get("next_page_token")),
        "first_link": _page_link(query, "") if page_token else None,
        "error": error,
    }
    return render(request, "catalogue.html", context)


async def product_page(
    request: Request,
    product_id: str,
    *,
    quantity: str = "1",
    error: str = "",
    status: int = 200,
) -> Response:
    try:
        product = await shop_api(request).product(product_id)
    except Problem as problem:
        if problem.status in (404, 422):
            return error_page(request, 404, "This product is not in the catalogue.")
        raise
    context = {"product": product, "quantity": quantity, "error": error}
    return render(request, "product.html", context, status)


@router.get("/products/{product_id}")
async def product(request: Request, product_id: str) -> Response:
    return await product_page(request, product_id)
