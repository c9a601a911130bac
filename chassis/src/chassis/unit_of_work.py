"""The unit of work: one PostgreSQL transaction that a service's repositories share, with the events
it produced (outbox) and the claim of the event that caused it (inbox).

```python
async with uow:                                  # BEGIN
    if not await uow.inbox.claim(event):         # seen before: no effect
        return
    await uow.stock.reserve(...)                 # repositories work on uow.connection
    # (or the claim and the first statement as one: `uow.inbox.claim_with(event, query)`)
    uow.publish(stock_reserved)                  # routing key, ids and time: from the message
    uow.after_commit(lambda: cache.invalidate(ids))
# leaving the block writes the outbox rows and commits, or rolls everything back (outbox included)
```

A service subclasses `UnitOfWork` and binds its repositories in `bind(connection)`. Given the
service's `OutboxPublisher`, the events a transaction committed are published right after the
commit (the relay publishes whatever that does not). A database
outage anywhere in the block (acquire, a query, the commit) surfaces as `Unavailable`. A
connection found dead at BEGIN (it died unnoticed in the pool: a database restart) is replaced
and the transaction begun again, once: nothing of it had reached the server.

Time: an event published without `occurred_at` gets the transaction's time (PostgreSQL `now()`,
fixed for the whole transaction). It is the same instant as the rows the transaction wrote (an
order's `created_at` or `updated_at`) and as the outbox row, whose time is the AMQP timestamp:
one clock per event, the database's, whichever replica or host produced it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import asyncpg
from google.protobuf.message import Message

from chassis.errors import Unavailable
from chassis.logging import get_logger
from chassis.messaging.inbox import Inbox, Outcome
from chassis.messaging.outbox import OutboxPublisher, PendingEvent, write_outbox
from chassis.postgres import OUTAGE_ERRORS, connection_lost

_log = get_logger(__name__)
AfterCommit = Callable[[], Awaitable[Any]]


class UnitOfWork:
    """`async with` opens a transaction; leaving the block commits it (with the queued events) or,
    on any exception, rolls all of it back. One instance is one transaction: make a new one (the
    service's factory) for every use case or event."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        consumer: str = "",
        acquire_timeout: float = 5.0,
        publisher: OutboxPublisher | None = None,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._consumer = consumer
        self._acquire_timeout = acquire_timeout
        self._conn: asyncpg.Connection | None = None
        self._transaction: Any = None
        self._events: list[PendingEvent] = []
        self._after_commit: list[AfterCommit] = []
        self._now: datetime | None = None
        self.committed = False

    def bind(self, connection: asyncpg.Connection) -> None:
        """Subclasses build their repositories on the transaction's connection here."""

    @property
    def connection(self) -> asyncpg.Connection:
        if self._conn is None:
            raise RuntimeError("the unit of work is not open: use it as `async with uow:`")
        return self._conn

    @property
    def inbox(self) -> Inbox:
        """The consumer's processed-event ids, in this transaction."""
        return Inbox(self.connection, self._consumer, self.saw_time)

    def saw_time(self, now: datetime) -> None:
        """The transaction's time (PostgreSQL `now()`, the same for the whole transaction), as a
        statement of this transaction returned it (an inbox claim does): the outbox stamps the
        events with it at commit instead of asking the server for it, a round trip saved."""
        self._now = now

    def publish(self, event: Message) -> None:
        """Queue `event` for the outbox; written in this transaction when it commits. The routing
        key and the correlation id come from the event's declaration (its proto option); an
        empty `event_id` is given a new UUID now, an unset `occurred_at` the transaction's time
        at commit (when the body is serialised: change nothing in the event after publishing).
        What AMQP cannot carry (an empty correlation id, a malformed event id) is refused here,
        at once."""
        self.connection  # noqa: B018 - refuses an event queued outside the block
        self._events.append(PendingEvent.of(event))

    def after_commit(self, callback: AfterCommit) -> None:
        """Run `callback` once the transaction has committed (never after a rollback); a failing
        callback is logged and does not undo the commit."""
        self._after_commit.append(callback)

    async def __aenter__(self) -> Self:
        if self._conn is not None or self.committed:
            raise RuntimeError("a unit of work is one transaction: open a new one")
        try:
            conn, transaction = await self._begin()
        except OUTAGE_ERRORS as error:
            if not connection_lost(error):
                raise Unavailable("the database is unavailable") from error
            # The connection died unnoticed (a database restart) before BEGIN got through:
            # nothing of this transaction reached the server, so it starts on a fresh one.
            _log.info("transaction_begin_retried", error=f"{type(error).__name__}: {error}")
            try:
                conn, transaction = await self._begin()
            except OUTAGE_ERRORS as again:
                raise Unavailable("the database is unavailable") from again
        self._conn, self._transaction = conn, transaction
        self.bind(conn)
        return self

    async def _begin(self) -> tuple[asyncpg.Connection, Any]:
        conn = await self._pool.acquire(timeout=self._acquire_timeout)
        try:
            transaction = conn.transaction()
            await transaction.start()
        except BaseException:
            await self._release(conn)
            raise
        return conn, transaction

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, transaction = self.connection, self._transaction
        try:
            if exc is None:
                rows = await write_outbox(conn, self._events, now=self._now)
                await transaction.commit()
                self.committed = True
                if self._publisher is not None:
                    self._publisher.submit(rows)
            else:
                await transaction.rollback()
        except asyncpg.InterfaceError:
            if exc is None:
                raise
            # The rollback found the connection gone (closed, or taken back by the pool when it
            # was lost) and its transaction with it: nothing is left to undo.
        except OUTAGE_ERRORS as error:
            if exc is None:
                raise Unavailable("the database is unavailable") from error
            # The rollback failed too (the connection is gone, taking the transaction with it):
            # the block's own error below is the one to report.
        finally:
            self._conn = None
            await self._release(conn)
        if isinstance(exc, OUTAGE_ERRORS):
            raise Unavailable("the database is unavailable") from exc
        if self.committed:
            await self._run_after_commit()

    async def _release(self, conn: asyncpg.Connection) -> None:
        try:
            await self._pool.release(conn, timeout=self._acquire_timeout)
        except OUTAGE_ERRORS:
            conn.terminate()

    async def _run_after_commit(self) -> None:
        for callback in self._after_commit:
            try:
                await callback()
            except Exception as error:  # committed already: report, never undo
                _log.error("after_commit_failed", error=f"{type(error).__name__}: {error}")


U = TypeVar("U", bound=UnitOfWork)
E = TypeVar("E", bound=Message)
Effect = Callable[[U, E], Awaitable[None]]


class HandledOnce(Generic[U]):
    """Turns an effect `(uow, event)` into a consumer handler whose inbox claim and effect share
    one unit of work from `new_unit_of_work`: a redelivered event is acknowledged as a DUPLICATE
    with no effect, and a failure leaves no claim behind.

    ```python
    once = HandledOnce(new_unit_of_work)
    subscriptions = [Subscription.of(OrderCreated, once(stock.on_order_created))]
    ```
    """

    def __init__(self, new_unit_of_work: Callable[[], U]) -> None:
        self._new_unit_of_work = new_unit_of_work

    def __call__(self, effect: Effect[U, E]) -> Callable[[E], Awaitable[Outcome]]:
        new_unit_of_work = self._new_unit_of_work

        async def handle(event: E) -> Outcome:
            async with new_unit_of_work() as uow:
                if not await uow.inbox.claim(event):
                    return Outcome.DUPLICATE
                await effect(uow, event)
            return Outcome.PROCESSED

        handle.__qualname__ = getattr(effect, "__qualname__", "handle")
        return handle

    def claiming(
        self, effect: Callable[[U, E], Awaitable[Outcome]]
    ) -> Callable[[E], Awaitable[Outcome]]:
        """For an effect that claims the event itself, in its own first statement
        (`uow.inbox.claim_with`, one round trip fewer), on every path, and answers DUPLICATE
        when the claim says so: only the unit of work is opened here."""
        new_unit_of_work = self._new_unit_of_work

        async def handle(event: E) -> Outcome:
            async with new_unit_of_work() as uow:
                return await effect(uow, event)

        handle.__qualname__ = getattr(effect, "__qualname__", "handle")
        return handle
