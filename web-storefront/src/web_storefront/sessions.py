"""Shopper sessions, server side in Redis. The browser holds only an opaque session id in an
HttpOnly, SameSite=Lax cookie (Secure over HTTPS); the access token, the CSRF token and the
shopper's identity stay here, so signing out (deleting the record) really ends the session.

Redis keys are `<REDIS_KEY_PREFIX>storefront:session:<sha256 of the id>`: a reader of Redis
learns no cookie value that would work. Records expire after STOREFRONT_SESSION_IDLE_SECONDS
unused; a signed-in session also ends when its token does.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.datastructures import MutableHeaders
from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chassis.logging import get_logger
from web_storefront.wording import SESSION_ENDED

log = get_logger(__name__)

COOKIE_NAME = "storefront_session"
_ID = re.compile(r"[A-Za-z0-9_-]{43}")
# A token this close to its expiry is treated as expired (a call made with it could fail).
_TOKEN_MARGIN_SECONDS = 30


def _new_id() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Session:
    id: str
    csrf: str
    token: str | None = None
    token_expires_at: float = 0.0
    user: dict[str, str] | None = None
    notice: str | None = None
    # Bookkeeping of this request, never stored.
    new: bool = field(default=False, compare=False)
    dirty: bool = field(default=False, compare=False)
    used: bool = field(default=False, compare=False)
    replaced_id: str | None = field(default=None, compare=False)

    @classmethod
    def fresh(cls) -> Session:
        return cls(id=_new_id(), csrf=secrets.token_urlsafe(32), new=True)

    @property
    def csrf_token(self) -> str:
        """The token a rendered form carries; rendering one makes the session worth keeping."""
        self.used = True
        return self.csrf

    @property
    def signed_in(self) -> bool:
        return self.token is not None and time.time() < self.token_expires_at

    @property
    def is_admin(self) -> bool:
        return self.signed_in and (self.user or {}).get("role") == "admin"

    def _rotate(self) -> None:
        """A new id and CSRF token (no session fixation across a change of identity)."""
        if not self.new and self.replaced_id is None:
            self.replaced_id = self.id
        self.id = _new_id()
        self.csrf = secrets.token_urlsafe(32)
        self.dirty = True

    def sign_in(self, token: str, expires_in: int, user: dict[str, str]) -> None:
        self._rotate()
        self.token = token
        self.token_expires_at = time.time() + max(0, expires_in - _TOKEN_MARGIN_SECONDS)
        self.user = user

    def sign_out(self) -> None:
        self._rotate()
        self.token = None
        self.token_expires_at = 0.0
        self.user = None

    def flash(self, notice: str) -> None:
        """A sentence shown once, on the next page rendered."""
        self.notice = notice
        self.dirty = True

    def take_notice(self) -> str | None:
        notice, self.notice = self.notice, None
        if notice is not None:
            self.dirty = True
        return notice

    def record(self) -> bytes:
        return orjson.dumps(
            {
                "csrf": self.csrf,
                "token": self.token,
                "token_expires_at": self.token_expires_at,
                "user": self.user,
                "notice": self.notice,
            }
        )

    @classmethod
    def from_record(cls, session_id: str, raw: bytes) -> Session | None:
        try:
            data: dict[str, Any] = orjson.loads(raw)
            session = cls(
                id=session_id,
                csrf=str(data["csrf"]),
                token=data.get("token"),
                token_expires_at=float(data.get("token_expires_at") or 0.0),
                user=data.get("user"),
                notice=data.get("notice"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if session.token is not None and not session.signed_in:
            # The token expired: the shopper is signed out, and told so.
            session.token, session.user = None, None
            session.notice = SESSION_ENDED
            session.dirty = True
        return session


class SessionStore:
    def __init__(self, redis: Redis, *, key_prefix: str, idle_seconds: int) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._idle = idle_seconds

    def _key(self, session_id: str) -> str:
        digest = hashlib.sha256(session_id.encode()).hexdigest()
        return f"{self._prefix}storefront:session:{digest}"

    async def load(self, session_id: str) -> Session | None:
        """The session of that id, its idle time restarted; None if unknown or expired."""
        if not _ID.fullmatch(session_id):
            return None
        raw = await self._redis.getex(self._key(session_id), ex=self._idle)
        if raw is None:
            return None
        return Session.from_record(session_id, raw.encode() if isinstance(raw, str) else raw)

    async def save(self, session: Session) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            if session.replaced_id is not None:
                pipe.delete(self._key(session.replaced_id))
            pipe.set(self._key(session.id), session.record(), ex=self._idle)
            await pipe.execute()

    async def check(self) -> None:
        await self._redis.ping()


def session_of(scope: Scope) -> Session:
    session: Session = scope["state"]["session"]
    return session


def _cookie(scope: Scope, session: Session) -> str:
    secure = "; Secure" if scope.get("scheme") == "https" else ""
    return f"{COOKIE_NAME}={session.id}; Path=/; HttpOnly; SameSite=Lax{secure}"


class SessionMiddleware:
    """Loads the shopper's session before the page and stores it after, when it changed or a
    form was rendered with its CSRF token. A Redis that does not answer makes every page a
    "try again shortly" page (`unavailable`), never a page that forgets who is signed in."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: SessionStore,
        unavailable: Callable[[Scope], Awaitable[Response]],
        skip_prefixes: tuple[str, ...] = ("/static/", "/healthz", "/readyz"),
    ) -> None:
        self.app = app
        self.store = store
        self.unavailable = unavailable
        self.skip_prefixes = skip_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.skip_prefixes):
            await self.app(scope, receive, send)
            return
        cookies = {}
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookies.update(cookie_parser(value.decode("latin-1")))
        try:
            loaded = await self.store.load(cookies.get(COOKIE_NAME, ""))
        except (RedisError, OSError, TimeoutError) as error:
            log.error("session_store_unavailable", error=type(error).__name__)
            await (await self.unavailable(scope))(scope, receive, send)
            return
        session = loaded or Session.fresh()
        scope.setdefault("state", {})["session"] = session
        replaced = False

        async def send_with_session(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                keep = session.dirty or (session.new and session.used)
                if keep:
                    try:
                        await self.store.save(session)
                    except (RedisError, OSError, TimeoutError) as error:
                        log.error("session_store_unavailable", error=type(error).__name__)
                        replaced = True
                        await (await self.unavailable(scope))(scope, receive, send)
                        return
                    if session.new or session.replaced_id is not None:
                        MutableHeaders(scope=message).append("set-cookie", _cookie(scope, session))
            await send(message)

        await self.app(scope, receive, send_with_session)
