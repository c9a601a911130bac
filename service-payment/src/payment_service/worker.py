"""The provider worker: the only place service-payment calls the provider, never inside a
database transaction.

A background task of the runtime, woken right after a handler commits a payment that needs the
provider (`wake`), and otherwise looking every PAYMENT_WORKER_INTERVAL_SECONDS (other
replicas' changes, retries coming due, leases of a worker that died). Each round:

1. leases the due payments (`UPDATE ... SET next_attempt_at = now() + lease ... FOR UPDATE SKIP
   LOCKED ... RETURNING`), so replicas share the work and a crashed worker's rows come back when
   the lease ends;
2. for each, decides the operation from
   the row (`domain.next_step`) and calls the provider with the order id as idempotency key,
   all of them concurrently;
3. records each answer in a new unit of work, guarded by the state the call started from, with
   the event of the move in the outbox (one per outcome; a capture publishes none), then goes on
   with what the payment needs next. A transient failure is counted and retried with jittered
   exponential backoff; an authorisation stops being retried PAYMENT_AUTHORIZE_DEADLINE_SECONDS
   after it was first wanted (the order's own timeout then cancels it, and that voids it).

A crash between the provider's answer and the commit loses nothing and charges nothing twice: the
lease runs out, the call is made again with the same key, and the provider answers what it
stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from opentelemetry import context as otel_context
from opentelemetry import propagate

from chassis.errors import Unavailable
from chassis.logging import get_logger
from payment_service import domain, reporting
from payment_service.domain import Answer, Call, Operation, Payment
from payment_service.handlers import advance
from payment_service.proto_mapping import payment_event
from payment_service.provider import PaymentProvider, ProviderRefused, ProviderUnavailable
from payment_service.store import Lease, PaymentStore, PaymentUnitOfWork

_log = get_logger(__name__)
LEASE_BATCH = 32


def _carrier(stored: str | None) -> dict[str, str]:
    loaded = json.loads(stored) if stored else {}
    return {str(key): str(value) for key, value in loaded.items()}


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    provider_timeout_seconds: float
    retry_base_seconds: float
    retry_max_seconds: float
    authorize_deadline_seconds: float
    interval_seconds: float

    @property
    def lease_seconds(self) -> float:
        """Long enough for a call to end and its answer to be recorded."""
        return self.provider_timeout_seconds * 2 + 5.0


@dataclass(frozen=True, slots=True)
class CallResult:
    answer: Answer | None  # None: the provider refused, or did not answer
    reason: str | None = None
    transient: bool = False


class PaymentWorker:
    def __init__(
        self,
        new_unit_of_work: Callable[[], PaymentUnitOfWork],
        store: PaymentStore,
        provider: PaymentProvider,
        settings: WorkerSettings,
    ) -> None:
        self._new_unit_of_work = new_unit_of_work
        self._store = store
        self._provider = provider
        self._settings = settings
        self._woken = asyncio.Event()
        # Leases this worker still holds whose processing failed (a database outage mid-way),
        # with when they first failed: processed again in the next rounds, for as long as a
        # lease lasts (after that another worker may have taken the payment over).
        self._stalled: dict[uuid.UUID, tuple[Lease, float]] = {}

    async def wake(self) -> None:
        """A handler committed a payment that needs the provider: look now."""
        self._woken.set()

    async def run(self) -> None:
        """Work forever; a database outage is logged and the next round tries again."""
        while True:
            self._woken.clear()
            try:
                leased = await self.run_once()
            except Unavailable as error:
                _log.warning("payment_worker_round_failed", error=str(error))
                leased = 0
            if leased >= LEASE_BATCH:
                continue  # more may be due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._settings.interval_seconds)

    async def run_once(self) -> int:
        """One round: lease what is due and process it all, with the leases of this worker whose
        processing failed in an earlier round (see `_stalled`); returns how many were leased."""
        leases = await self._store.lease_due(
            limit=LEASE_BATCH, lease_seconds=self._settings.lease_seconds
        )
        fresh = {lease.payment.order_id for lease in leases}
        now = time.monotonic()
        failed_since = {order_id: since for order_id, (_, since) in self._stalled.items()}
        retried = [
            lease
            for order_id, (lease, since) in self._stalled.items()
            if order_id not in fresh and now - since < self._settings.lease_seconds
        ]
        self._stalled.clear()
        await self._process_all([*leases, *retried], failed_since)
        return len(leases)

    async def _process_all(
        self, work: list[Lease], failed_since: dict[uuid.UUID, float] | None = None
    ) -> None:
        """Process every lease concurrently; one whose processing failed is kept in `_stalled`
        (with when it first failed) for the next rounds."""
        if not work:
            return
        now = time.monotonic()
        results = await asyncio.gather(
            *(self._process(lease) for lease in work), return_exceptions=True
        )
        for lease, result in zip(work, results, strict=True):
            if isinstance(result, Exception):
                # Usually the database went away between the provider's answer and its
                # record: tried again next round, not when the lease runs out (longer than a
                # saga's timeout).
                order_id = lease.payment.order_id
                since = (failed_since or {}).get(order_id, now)
                self._stalled[order_id] = (lease, since)
                _log.warning(
                    "payment_processing_failed",
                    order_id=str(lease.payment.order_id),
                    error=f"{type(result).__name__}: {result}",
                )
            elif isinstance(result, BaseException):
                raise result

    async def _process(self, lease: Lease) -> None:
        """Continue the trace of the event that made the payment due: the provider call's span
        and the events recorded with its answer belong to that checkout's trace. (Each lease is
        processed in a task of its own, so the attached context is this task's only.)"""
        token = otel_context.attach(propagate.extract(_carrier(lease.payment.trace_context)))
        try:
            await self._process_in_trace(lease)
        finally:
            otel_context.detach(token)

    async def _process_in_trace(self, lease: Lease) -> None:
        payment = lease.payment
        step = domain.next_step(payment)
        leased_until = payment.next_attempt_at
        if not isinstance(step, Call):
            if isinstance(step, domain.Move):
                await self._advance(payment)
            elif leased_until is not None:
                await self._store.release(payment.order_id, leased_until)
            return
        operation = step.operation
        deadline = self._settings.authorize_deadline_seconds
        if operation is Operation.AUTHORIZE and self._past_deadline(payment, lease, deadline):
            if leased_until is not None and await self._store.release(
                payment.order_id, leased_until
            ):
                reporting.authorization_abandoned(payment, deadline)
            return
        result = await self._call(payment, operation)
        if result.answer is not None:
            move = domain.outcome(operation, result.answer)
            if move is not None:
                await self._record(payment, move, result.reason)
                return
        await self._retry_later(payment, operation)

    @staticmethod
    def _past_deadline(payment: Payment, lease: Lease, deadline_seconds: float) -> bool:
        if payment.wanted_since is None:
            return False
        return lease.now >= payment.wanted_since + timedelta(seconds=deadline_seconds)

    async def _call(self, payment: Payment, operation: Operation) -> CallResult:
        key = str(payment.order_id)
        started = time.perf_counter()
        outcome = "unavailable"
        try:
            if operation is Operation.AUTHORIZE:
                if (
                    payment.payment_token is None
                    or payment.amount_cents is None
                    or payment.currency is None
                ):
                    raise RuntimeError(f"payment {key} is authorising without an intent")
                answer, reason = await self._provider.authorize(
                    key,
                    payment_token=payment.payment_token,
                    amount_cents=payment.amount_cents,
                    currency=payment.currency,
                )
            elif operation is Operation.CAPTURE:
                answer, reason = await self._provider.capture(key), None
            elif operation is Operation.VOID:
                answer, reason = await self._provider.void(key), None
            else:
                answer, reason = await self._provider.refund(key), None
            outcome = answer.value
            return CallResult(answer, reason)
        except ProviderUnavailable as error:
            _log.info(
                "provider_call_failed",
                order_id=key,
                operation=operation.value,
                error=str(error),
                transient=True,
            )
            return CallResult(None, transient=True)
        except ProviderRefused as refused:
            outcome = "refused"
            _log.warning(
                "provider_call_refused",
                order_id=key,
                operation=operation.value,
                status_code=refused.status_code,
                provider_status=refused.status,
            )
            return CallResult(None)
        finally:
            reporting.provider_called(operation, outcome, time.perf_counter() - started)

    async def _record(self, payment: Payment, move: domain.Move, reason: str | None) -> None:
        """The provider's answer, in one unit of work: the move (if the payment is still where
        the call started), its event, and whatever the payment needs next."""
        async with self._new_unit_of_work() as uow:
            written = await uow.payments.write(
                payment,
                source=payment.state,
                target=move.target,
                decline_reason=reason,
                attempted=True,
            )
            if written is None:
                _log.info(
                    "provider_answer_superseded",
                    order_id=str(payment.order_id),
                    state=payment.state.value,
                    target=move.target.value,
                )
                return
            moved = written.payment
            uow.saw_time(written.now)
            if move.event is not None:
                uow.publish(payment_event(moved, move.event))
            uow.after_commit(partial(reporting.payment_moved, moved, payment.state))
            await advance(uow, moved, self.wake)

    async def _advance(self, payment: Payment) -> None:
        async with self._new_unit_of_work() as uow:
            locked = await uow.payments.lock(payment.order_id)
            await advance(uow, locked, self.wake)

    async def _retry_later(self, payment: Payment, operation: Operation) -> None:
        """After a transient failure or a refusal: count the call and try again later, unless
        an event made the payment due meanwhile (then it is decided again at once)."""
        if payment.next_attempt_at is None:
            raise RuntimeError(f"payment {payment.order_id} was processed without a lease")
        delay = domain.retry_delay(
            payment.consecutive_failures + 1,
            base_seconds=self._settings.retry_base_seconds,
            max_seconds=self._settings.retry_max_seconds,
        )
        deadline = (
            self._settings.authorize_deadline_seconds if operation is Operation.AUTHORIZE else None
        )
        updated = await self._store.retry_later(
            payment.order_id,
            source=payment.state,
            leased_until=payment.next_attempt_at,
            delay_seconds=delay,
            deadline_seconds=deadline,
        )
        if updated is None:
            return  # moved on or made due meanwhile: decided again from there
        if updated.next_attempt_at is None:
            reporting.authorization_abandoned(updated, self._settings.authorize_deadline_seconds)
        else:
            _log.info(
                "provider_call_retry_scheduled",
                order_id=str(payment.order_id),
                operation=operation.value,
                retry_in_s=round(delay, 3),
                provider_attempts=updated.provider_attempts,
            )
