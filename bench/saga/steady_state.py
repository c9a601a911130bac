"""What makes a checkout figure honest: a steady-state window and the outcome of every checkout.

- `Window`: load starts at `begin`, the first `warm_up` seconds are not measured, and only what
  happens between `start` and `end` counts (completions seen inside it, checkouts started inside
  it); CPU is sampled at exactly `start` and `end` (`sample_window`).
- `Checkout`: one attempt, from its add-to-cart request (or, in an open loop, from the moment it
  was scheduled) to its order's fate. A non-2xx answer or a transport error fails it at once; an
  accepted order fails when it is cancelled, for any reason (TIMEOUT included), or when it is
  neither confirmed nor cancelled once the drain is over.
- `SagaLedger`: each order's confirmation time or cancel reason, read from the events exchange.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from process_cpu import CpuWindow

from chassis.testing.events import EventTap
from ecommerce.events.v1 import events_pb2

CONFIRMED = "confirmed"
PENDING = "pending"


@dataclass(frozen=True, slots=True)
class Window:
    begin: float
    warm_up: float
    seconds: float

    @classmethod
    def from_now(cls, warm_up: float, seconds: float) -> Window:
        return cls(time.perf_counter(), warm_up, seconds)

    @property
    def start(self) -> float:
        return self.begin + self.warm_up

    @property
    def end(self) -> float:
        return self.start + self.seconds

    def contains(self, moment: float) -> bool:
        return self.start <= moment < self.end


@dataclass(slots=True)
class Checkout:
    started: float
    order_id: str | None = None
    failure: str | None = None  # why it failed before reaching the saga
    done_at: float | None = None  # floor only: when its last step committed


@dataclass
class SagaLedger:
    """Order id -> when `order.confirmed` was seen / the reason of `order.cancelled`."""

    tap: EventTap
    confirmed: dict[str, float] = field(default_factory=dict)
    cancelled: dict[str, str] = field(default_factory=dict)
    _read: int = 0
    _waiting: dict[str, asyncio.Future[None]] = field(default_factory=dict)

    def update(self) -> None:
        events = self.tap.events
        for event in events[self._read :]:
            if event.routing_key == "order.confirmed":
                self.confirmed.setdefault(event.correlation_id, event.seen_at)
            elif event.routing_key == "order.cancelled":
                reason = "cancelled"
                if isinstance(event.event, events_pb2.OrderCancelled):
                    name = events_pb2.OrderCancelReason.Name(event.event.reason)
                    reason = "cancelled " + name.removeprefix("ORDER_CANCEL_REASON_")
                self.cancelled.setdefault(event.correlation_id, reason)
            else:
                continue
            waiter = self._waiting.pop(event.correlation_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._read = len(events)

    async def follow(self) -> None:
        """Read new events every 10 ms, waking the shoppers whose order they settle (one
        task for all of them: a poll per shopper would cost the client more than it measures)."""
        while True:
            self.update()
            await asyncio.sleep(0.01)

    async def settled(self, order_id: str, within: float) -> None:
        """Return once the order is confirmed or cancelled, or after `within` seconds."""
        if order_id in self.confirmed or order_id in self.cancelled:
            return
        waiter = self._waiting.setdefault(order_id, asyncio.get_running_loop().create_future())
        try:
            await asyncio.wait_for(asyncio.shield(waiter), within)
        except TimeoutError:
            self._waiting.pop(order_id, None)

    def outcome(self, checkout: Checkout) -> str:
        """`confirmed`, `pending`, or why it failed."""
        if checkout.failure is not None:
            return checkout.failure
        if checkout.order_id in self.cancelled:  # a cancel after a confirm is a failure too
            return self.cancelled[checkout.order_id]
        if checkout.order_id in self.confirmed:
            return CONFIRMED
        return PENDING

    def done_at(self, checkout: Checkout) -> float | None:
        if checkout.order_id is None:
            return None
        return self.confirmed.get(checkout.order_id)

    async def drain(self, checkouts: Iterable[Checkout], seconds: float) -> None:
        """Wait until every accepted order is confirmed or cancelled, at most `seconds`."""
        accepted = [c for c in checkouts if c.failure is None]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.update()
            if all(self.outcome(c) != PENDING for c in accepted):
                return
            await asyncio.sleep(0.2)
        self.update()


@dataclass(frozen=True, slots=True)
class WindowSample:
    """CPU over the window, the process groups it is charged to, and how much each counter
    (committed transactions, events seen) grew inside the window."""

    cpu: CpuWindow
    groups: dict[str, set[int]]
    counters: dict[str, float]


async def sample_window(
    window: Window,
    groups_at_end: Callable[[CpuWindow], Awaitable[dict[str, set[int]]]],
    counters: Callable[[], Awaitable[dict[str, float]]],
) -> WindowSample:
    """Read the counters and snapshot CPU at the window's start and at its end; the process
    groups are chosen at the end (pooled connections and services all exist by then)."""
    cpu = CpuWindow()
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    before = await counters()
    cpu.open()
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    cpu.close()
    after = await counters()
    grown = {name: after[name] - before[name] for name in after}
    return WindowSample(cpu, await groups_at_end(cpu), grown)


@dataclass
class Figures:
    """One scenario's figures, all taken from its window."""

    name: str
    window: Window
    completed_in_window: int
    started_in_window: int
    latencies_ms: list[float]
    failures: Counter[str]
    unit: str = "confirmed/s"
    offered_per_second: float | None = None
    cpu_ms: dict[str, float] = field(default_factory=dict)
    late_starts: int = 0

    @property
    def rate(self) -> float:
        return self.completed_in_window / self.window.seconds

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def figures(
    name: str,
    window: Window,
    checkouts: list[Checkout],
    outcome: Callable[[Checkout], str],
    done_at: Callable[[Checkout], float | None],
) -> Figures:
    """Completions seen inside the window (whenever their checkout started), and the latency and
    failures of the checkouts started inside it."""
    completed = sum(1 for c in checkouts if (t := done_at(c)) is not None and window.contains(t))
    started = [c for c in checkouts if window.contains(c.started)]
    latencies, failures = [], Counter[str]()
    for checkout in started:
        result = outcome(checkout)
        finished = done_at(checkout)
        if result == CONFIRMED and finished is not None:
            latencies.append((finished - checkout.started) * 1000)
        elif result == PENDING:
            failures["unfinished after the drain"] += 1
        else:
            failures[result] += 1
    return Figures(name, window, completed, len(started), latencies, failures)
