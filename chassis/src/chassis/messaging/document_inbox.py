"""The inbox on a store whose atomic step is one document (a Redis value, a Couchbase document):
the same "handled once" rule as the PostgreSQL inbox, for a service without an SQL store.

The PostgreSQL inbox claims `(consumer, event_id)` in the transaction of the effect. A key-value
store changes one document atomically (Couchbase CAS, a Redis compare-and-set script), so the
claim lives in the document the event changes, under `inbox.<consumer>`, and is written in the
same atomic step as the effect: both, or neither. A claim is kept `retention`
(INBOX_RETENTION_DAYS, as the PostgreSQL inbox keeps its ids), and a document keeps at most
`capacity` claims (the newest), so it stays small; both are pruned whenever the document takes a
new claim.

```python
inbox = DocumentInbox("service-cart", retention=timedelta(days=14))
document, version = await read(key)          # Couchbase get (its CAS), Redis GET (the value)
if not inbox.claim(document, event):         # handled before: no effect, nothing written
    return Outcome.DUPLICATE
change(document)                             # the effect, on the same document
await write_if_unchanged(key, document, version)   # conflict: read again and start over
```
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping
from datetime import timedelta
from typing import Any

from google.protobuf.message import Message

from chassis.messaging import codec

# The field of the document that holds the claims: {consumer: {event_id: claimed_at_ms}}.
INBOX_FIELD = "inbox"


class DamagedInbox(ValueError):
    """The document's inbox field is not what this module writes: the handler fails (and the
    event is dead-lettered after its attempts) rather than forget what was handled."""


class DocumentInbox:
    """The events one consumer has handled, kept in the documents they changed."""

    def __init__(
        self,
        consumer: str,
        *,
        retention: timedelta,
        capacity: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not consumer:
            raise ValueError("a document inbox needs its consumer's name")
        if capacity < 1:
            raise ValueError("a document inbox keeps at least one claim")
        self.consumer = consumer
        self.capacity = capacity
        self._retention_ms = retention.total_seconds() * 1000
        self._clock = clock

    def claim(self, document: MutableMapping[str, Any], event: Message) -> bool:
        """True the first time this consumer sees `event` in `document`, whose inbox field then
        holds the claim (write the document in the same atomic step as the effect); False for a
        duplicate, with the document untouched. `InvalidEventId` (poison) for an event without
        a UUID event id, `DamagedInbox` for an inbox field this module did not write."""
        event_id = str(codec.event_id_of(event))
        inboxes = dict(_mapping(document.get(INBOX_FIELD), INBOX_FIELD))
        claims = _mapping(inboxes.get(self.consumer), f"{INBOX_FIELD}.{self.consumer}")
        if event_id in claims:
            return False
        kept = self._kept(claims, int(self._clock() * 1000))
        # Strictly after every claim kept, so "the newest" is always well defined: claims taken
        # within one millisecond (a burst of redeliveries) would otherwise tie, and which of them
        # the capacity keeps would be arbitrary.
        now_ms = max([int(self._clock() * 1000), *(at + 1 for at in kept.values())])
        inboxes[self.consumer] = {**kept, event_id: now_ms}
        document[INBOX_FIELD] = inboxes
        return True

    def _kept(self, claims: dict[str, Any], now_ms: int) -> dict[str, int]:
        """The claims still within the retention, the newest `capacity - 1` of them (room for
        the one being added)."""
        if not all(isinstance(at, int | float) for at in claims.values()):
            raise DamagedInbox(f"{INBOX_FIELD}.{self.consumer} holds a claim without its time")
        fresh = [
            (int(at), event_id)
            for event_id, at in claims.items()
            if now_ms - at < self._retention_ms
        ]
        newest = sorted(fresh, reverse=True)[: self.capacity - 1]
        return {event_id: at for at, event_id in sorted(newest)}


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DamagedInbox(f"the document's {where} is a {type(value).__name__}, not a mapping")
    return value
