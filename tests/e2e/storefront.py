"""A shopper using the web storefront over plain HTTP (no browser): what a form post sends, read
back from the pages the storefront renders."""

from __future__ import annotations

import html
import re
import uuid
from dataclasses import dataclass

import httpx

from .shop import PASSWORD

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
IDEMPOTENCY_KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, f"no CSRF token on {page.url}"
    return found.group(1)


def text_of(page: httpx.Response) -> str:
    """The page's text without tags, entities decoded, whitespace collapsed."""
    without_tags = re.sub(r"<[^>]+>", " ", page.text)
    return " ".join(html.unescape(without_tags).split())


@dataclass
class WebShopper:
    """A browser-like client: keeps the session cookie, posts forms with their CSRF token."""

    client: httpx.AsyncClient
    email: str = ""

    async def post_form(
        self, page_path: str, action: str, fields: dict[str, str]
    ) -> httpx.Response:
        page = await self.client.get(page_path)
        return await self.client.post(action, data={"csrf_token": csrf_of(page), **fields})

    async def register(self, label: str = "web") -> httpx.Response:
        self.email = f"{label}-{uuid.uuid4().hex[:10]}@example.com"
        fields = {
            "email": self.email,
            "password": PASSWORD,
            "full_name": f"{label.title()} Shopper",
        }
        return await self.post_form("/register", "/register", fields)

    async def login(self, email: str, password: str) -> httpx.Response:
        return await self.post_form("/login", "/login", {"email": email, "password": password})


def storefront_client(url: str, source: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client of the storefront whose connections leave from `source` (any 127.x address)."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=30)
