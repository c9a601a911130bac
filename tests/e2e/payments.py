"""The money side of the saga as an outsider checks it: the simulated provider's ledger (its HTTP
API, the provider's own record of every authorisation, capture, void and refund, keyed by the
idempotency key service-payment sends, which is the order id) against the orders the shoppers
see over REST.

Once the platform is quiet, for every order: a CONFIRMED one was captured exactly its total and
never refunded; a CANCELLED one kept nothing (never captured, or captured and refunded in full);
no key has two entries of one kind; and the order's `payment_status` tells the same story.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from typing import Any

import httpx

# What an order's payment_status must end as, by how the order ended.
SETTLED_PAYMENT = {
    ("CONFIRMED", None): {"AUTHORIZED"},
    ("CANCELLED", "PAYMENT_DECLINED"): {"DECLINED"},
    ("CANCELLED", "OUT_OF_STOCK"): {"VOIDED"},
    ("CANCELLED", "TIMEOUT"): {"VOIDED", "REFUNDED"},
    ("CANCELLED", "USER_CANCELLED"): {"VOIDED", "REFUNDED"},
}


class Provider:
    """The simulated payment provider's HTTP API, read only."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    async def entries(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            answer = await http.get("/v1/ledger")
        assert answer.status_code == 200, answer.text
        return list(answer.json()["entries"])

    async def of(self, order_id: str) -> dict[str, list[int]]:
        """kind -> the amounts of this order's ledger entries of that kind."""
        kinds: dict[str, list[int]] = defaultdict(list)
        for entry in await self.entries():
            if entry["idempotency_key"] == order_id:
                kinds[entry["kind"]].append(int(entry["amount_cents"]))
        return dict(kinds)

    async def settled(self, order_id: str, kind: str, within: float = 30.0) -> dict[str, list[int]]:
        """This order's entries once one of `kind` is there."""
        deadline = time.monotonic() + within
        while True:
            found = await self.of(order_id)
            if kind in found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind} for order {order_id} after {within}s: {found}")
            await asyncio.sleep(0.2)


def money_problems(orders: list[dict[str, Any]], entries: list[dict[str, Any]]) -> list[str]:
    """What is wrong with the money of these (final) orders, by the provider's ledger."""
    problems: list[str] = []
    per_kind = Counter((e["idempotency_key"], e["kind"]) for e in entries)
    problems += [f"order {k} has {n} {kind} entries" for (k, kind), n in per_kind.items() if n > 1]
    amounts: dict[str, dict[str, int]] = defaultdict(dict)
    for entry in entries:
        amounts[entry["idempotency_key"]][entry["kind"]] = int(entry["amount_cents"])
    charged_total = confirmed_total = 0
    for order in orders:
        kinds = amounts.get(order["id"], {})
        if order.get("payment_status") is None:
            # Saga version 1 (placed before the payment step): nothing may reach the provider.
            if kinds:
                problems.append(f"order {order['id']} without payment has entries {kinds}")
            continue
        captured = kinds.get("capture", 0)
        kept = captured - (kinds.get("refund", 0) if captured else 0)
        charged_total += kept
        if order["status"] == "CONFIRMED":
            confirmed_total += order["total_cents"]
            if kept != order["total_cents"]:
                problems.append(f"confirmed order {order['id']} of {order['total_cents']}: {kinds}")
        elif kept != 0:
            problems.append(f"cancelled order {order['id']} kept {kept}: {kinds}")
        expected = SETTLED_PAYMENT.get((order["status"], order["cancel_reason"]))
        if expected is not None and order.get("payment_status") not in expected:
            problems.append(
                f"order {order['id']} {order['status']} {order['cancel_reason']}:"
                f" payment_status {order.get('payment_status')}, expected one of {expected}"
            )
    if charged_total != confirmed_total:
        problems.append(f"charged {charged_total} in all, confirmed orders total {confirmed_total}")
    return problems


async def check_money(
    provider: Provider,
    reread: Any,
    within: float = 30.0,
) -> None:
    """Until the ledger and the orders agree (captures, voids and refunds follow the orders'
    final status by a moment): `reread()` gives the orders as they are now."""
    deadline = time.monotonic() + within
    while True:
        orders = await reread()
        problems = money_problems(orders, await provider.entries())
        if not problems:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(problems)} money problems:\n" + "\n".join(problems[:20]))
        await asyncio.sleep(0.5)
