"""`chassis-dead-letters`: look into a service's dead-letter queue and re-drive it once the cause is
fixed (what an operator reaches for at 3 a.m.).

    chassis-dead-letters show service-product            # what waits there, and why
    chassis-dead-letters redrive service-product         # move it all back to the service queue
    chassis-dead-letters redrive service-product --limit 10

The broker is the one named by AMQP_URL, EVENTS_EXCHANGE and QUEUE_PREFIX (the service's own
settings). A re-driven message goes to that service's queue only (never to other services), is
dispatched by its original routing key, and goes through the service's inbox: an event that had
its effect before it was dead-lettered is acknowledged as a duplicate, with no second effect.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Sequence
from typing import Any

from chassis.messaging import redrive, topology
from chassis.messaging.broker import Broker
from chassis.settings import AmqpSettings, load_settings


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def _reason(headers: dict[str, Any]) -> tuple[str, str]:
    reason = headers.get(redrive.DEAD_LETTER_REASON)
    if reason:
        return _text(reason), _text(headers.get(redrive.DEAD_LETTER_ERROR))
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        # Dead-lettered by the broker itself: the consumer died with it too often.
        return f"broker: {_text(deaths[0].get('reason'))}", ""
    return "unknown", ""


async def show(broker: Broker, queue: str, *, limit: int) -> list[dict[str, str]]:
    """The messages waiting in `queue`'s DLQ (at most `limit`), left where they are."""
    channel = await broker.channel()
    try:
        async with asyncio.timeout(broker.rpc_timeout):
            dlq = await topology.passive_queue(channel, f"{queue}.dlq")
        rows = []
        for _ in range(min(int(dlq.declaration_result.message_count or 0), limit)):
            # Held unacknowledged until the channel closes, which puts each one back.
            message = await dlq.get(no_ack=False, fail=False, timeout=broker.rpc_timeout)
            if message is None:
                break
            headers = dict(message.headers or {})
            reason, error = _reason(headers)
            rows.append(
                {
                    "message_id": message.message_id or "",
                    "type": message.type or "",
                    "routing_key": redrive.original_routing_key(message),
                    "correlation_id": message.correlation_id or "",
                    "reason": reason,
                    "error": error,
                    "dead_lettered_at": _text(
                        (message.headers or {}).get(redrive.DEAD_LETTERED_AT)
                    ),
                }
            )
        return rows
    finally:
        await topology.close_bounded(channel)


async def _main(command: str, service: str, limit: int | None) -> int:
    settings = load_settings(AmqpSettings)
    broker = Broker(
        settings, "chassis-dead-letters", connection_name=f"dead-letters-{uuid.uuid4()}"
    )
    await broker.connect()
    try:
        queue = topology.queue_name(settings, service)
        if command == "show":
            rows = await show(broker, queue, limit=limit or 100)
            print(f"{queue}.dlq: {len(rows)} message(s) shown")
            for row in rows:
                print("  " + "  ".join(f"{key}={value}" for key, value in row.items() if value))
        else:
            moved = await redrive.redrive_dead_letters(broker, queue, limit=limit)
            print(f"moved {moved} message(s) from {queue}.dlq back to {queue}")
    finally:
        await broker.close()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="chassis-dead-letters",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["show", "redrive"])
    parser.add_argument("service", help="the service queue's name, e.g. service-product")
    parser.add_argument("--limit", type=int, default=None, help="at most this many messages")
    args = parser.parse_args(argv)
    sys.exit(asyncio.run(_main(args.command, args.service, args.limit)))


if __name__ == "__main__":
    main()
