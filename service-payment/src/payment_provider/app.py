"""The provider's HTTP API (FastAPI): authorise, capture, void, refund on an idempotency key, and
the reads tests audit with. Each request is one transaction of `ledger`; the database is created
and its tables made in the background at start (`/readyz` answers 200 once that is done and the
database answers), and until then, or while the database is away, every operation answers 503
`{"error": "transient"}`, as a real provider's outage would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from chassis import postgres
from chassis.heap import settle_heap
from chassis.logging import get_logger
from payment_provider import ledger
from payment_provider.settings import ProviderSettings

_log = get_logger(__name__)
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
Key = Annotated[str, Path(pattern=KEY_PATTERN)]


class AuthorizeBody(BaseModel):
    """`POST /v1/authorizations`: strict JSON types (no numeric strings, no booleans)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    idempotency_key: str = Field(pattern=KEY_PATTERN)
    payment_token: str = Field(pattern=r"^pm_[A-Za-z0-9_]{1,120}$")
    amount_cents: int = Field(gt=0, le=10**12)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class Books:
    """The pool and whether the schema is in place (made by the start-up task)."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.url = postgres.database_url(settings.postgres_url, settings.db_name)
        self.pool: asyncpg.Pool | None = None
        self.prepared = asyncio.Event()

    async def prepare(self) -> None:
        """Create the database and its tables, retried with backoff until it works."""
        delay = 0.2
        while True:
            try:
                await postgres.ensure_database(self.settings.postgres_url, self.settings.db_name)
                self.pool = await postgres.create_pool(
                    self.url, max_size=self.settings.postgres_pool_max
                )
                async with self.pool.acquire() as conn:
                    await ledger.create_schema(conn)
            except Exception as error:  # any failure at start is retried, each one logged
                _log.warning(
                    "provider_start_failed",
                    error=f"{type(error).__name__}: {error}",
                    retry_in_s=delay,
                )
                if self.pool is not None:
                    await self.pool.close()
                    self.pool = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.prepared.set()
            _log.info("provider_ready", database=self.settings.db_name)
            return

    def ready_pool(self) -> asyncpg.Pool | None:
        return self.pool if self.prepared.is_set() else None


def _reply(reply: ledger.Reply) -> JSONResponse:
    return JSONResponse(reply.body, status_code=reply.status_code)


def create_app(settings: ProviderSettings) -> FastAPI:
    books = Books(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        preparing = asyncio.create_task(books.prepare())
        settle_heap()  # before any traffic: see chassis.heap
        try:
            yield
        finally:
            preparing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await preparing
            if books.pool is not None:
                await books.pool.close()

    app = FastAPI(title="Simulated payment provider", lifespan=lifespan, docs_url=None)

    @app.exception_handler(OSError)
    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(TimeoutError)
    async def database_away(_request: Request, error: Exception) -> JSONResponse:
        _log.warning("provider_database_unavailable", error=f"{type(error).__name__}: {error}")
        return _reply(ledger.TRANSIENT)

    async def operate(operation: str, key: str, run: Any) -> JSONResponse:
        pool = books.ready_pool()
        if pool is None:
            return _reply(ledger.TRANSIENT)
        started = time.perf_counter()
        async with pool.acquire() as conn:
            reply: ledger.Reply = await run(conn)
        _log.info(
            "provider_operation",
            operation=operation,
            idempotency_key=key,
            status_code=reply.status_code,
            outcome=reply.body.get("status") or reply.body.get("error"),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return _reply(reply)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        pool = books.ready_pool()
        if pool is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        try:
            await postgres.check(pool)
        except Exception as error:  # any failure of the check means not ready
            return JSONResponse(
                {"status": "unavailable", "error": type(error).__name__}, status_code=503
            )
        return JSONResponse({"status": "ready"})

    @app.post("/v1/authorizations")
    async def authorize(body: AuthorizeBody) -> JSONResponse:
        request = ledger.AuthorizeRequest(
            idempotency_key=body.idempotency_key,
            payment_token=body.payment_token,
            amount_cents=body.amount_cents,
            currency=body.currency,
        )
        pool = books.ready_pool()
        if (
            pool is not None
            and body.payment_token == ledger.TOKEN_SLOW
            and not await ledger.is_decided(pool, body.idempotency_key)
        ):
            await asyncio.sleep(settings.slow_seconds)
        return await operate(
            "authorize", body.idempotency_key, lambda conn: ledger.authorize(conn, request)
        )

    @app.post("/v1/authorizations/{key}/capture")
    async def capture(key: Key) -> JSONResponse:
        return await operate("capture", key, lambda conn: ledger.capture(conn, key))

    @app.post("/v1/authorizations/{key}/void")
    async def void(key: Key) -> JSONResponse:
        return await operate("void", key, lambda conn: ledger.void(conn, key))

    @app.post("/v1/authorizations/{key}/refund")
    async def refund(key: Key) -> JSONResponse:
        return await operate("refund", key, lambda conn: ledger.refund(conn, key))

    @app.get("/v1/authorizations/{key}")
    async def read_authorization(key: Key) -> JSONResponse:
        pool = books.ready_pool()
        if pool is None:
            return _reply(ledger.TRANSIENT)
        return _reply(await ledger.authorization(pool, key))

    @app.get("/v1/ledger")
    async def read_ledger(idempotency_key: str | None = None) -> JSONResponse:
        pool = books.ready_pool()
        if pool is None:
            return _reply(ledger.TRANSIENT)
        return _reply(await ledger.entries(pool, idempotency_key))

    return app
