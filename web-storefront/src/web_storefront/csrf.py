"""CSRF protection of every form: a POST (or any unsafe method) must carry, as `csrf_token`, the
token of the shopper's session, which only a page of this shop can have rendered. Installed as an
app-wide dependency, so no route can forget it."""

from __future__ import annotations

import secrets

from fastapi import HTTPException, Request

from web_storefront.sessions import session_of

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FIELDS = 64


async def csrf_protected(request: Request) -> None:
    if request.method in SAFE_METHODS:
        return
    if request.scope.get("state", {}).get("body_too_large"):
        raise HTTPException(413)
    session = session_of(request.scope)
    # Parsed once here; the route reads the same parsed form (Starlette keeps it on the request).
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    sent = form.get("csrf_token")
    if (
        session.new
        or not isinstance(sent, str)
        or not secrets.compare_digest(sent.encode(), session.csrf.encode())
    ):
        raise HTTPException(403)
