"""Specs of the inbox kept in a key-value document: the "handled once" rule of the PostgreSQL inbox
for a store whose atomic step is one document (the stores' own contract suites run it for real)."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest

from chassis.messaging import DocumentInbox, InvalidEventId
from chassis.messaging.document_inbox import INBOX_FIELD, DamagedInbox

from .events import order_cancelled, order_created


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def inbox(clock: Clock) -> DocumentInbox:
    return DocumentInbox("service-cart", retention=timedelta(days=14), capacity=5, clock=clock)


def test_an_event_is_claimed_the_first_time_and_a_duplicate_leaves_the_document_untouched(
    inbox: DocumentInbox,
) -> None:
    document: dict[str, Any] = {"lines": []}
    event = order_created()

    assert inbox.claim(document, event) is True
    claimed = copy.deepcopy(document)
    assert inbox.claim(document, event) is False
    assert document == claimed
    assert list(document[INBOX_FIELD]["service-cart"]) == [event.event_id]


def test_claims_survive_the_documents_json_round_trip(inbox: DocumentInbox) -> None:
    document: dict[str, Any] = {}
    event = order_created()
    inbox.claim(document, event)

    stored = json.loads(json.dumps(document))

    assert inbox.claim(stored, event) is False


def test_each_consumer_has_its_own_claims(clock: Clock) -> None:
    document: dict[str, Any] = {}
    event = order_created()
    cart = DocumentInbox("service-cart", retention=timedelta(days=1), clock=clock)
    other = DocumentInbox("service-wishlist", retention=timedelta(days=1), clock=clock)

    assert (cart.claim(document, event), other.claim(document, event)) == (True, True)
    assert cart.claim(document, event) is False


def test_a_claim_is_forgotten_once_past_the_retention_when_the_document_takes_another(
    inbox: DocumentInbox, clock: Clock
) -> None:
    document: dict[str, Any] = {}
    old, recent, new = order_created(), order_created(), order_cancelled()
    inbox.claim(document, old)
    clock.now += timedelta(days=13).total_seconds()
    inbox.claim(document, recent)
    clock.now += timedelta(days=2).total_seconds()

    inbox.claim(document, new)

    assert set(document[INBOX_FIELD]["service-cart"]) == {recent.event_id, new.event_id}


def test_a_document_keeps_at_most_its_capacity_the_newest_claims(
    inbox: DocumentInbox, clock: Clock
) -> None:
    document: dict[str, Any] = {}
    events = [order_created() for _ in range(8)]
    for event in events:
        clock.now += 1
        inbox.claim(document, event)

    assert set(document[INBOX_FIELD]["service-cart"]) == {e.event_id for e in events[-5:]}
    assert inbox.claim(document, events[-1]) is False


def test_the_event_being_claimed_is_kept_even_among_claims_of_the_same_instant(
    inbox: DocumentInbox,
) -> None:
    document: dict[str, Any] = {}
    events = [order_created() for _ in range(20)]
    for event in events:
        assert inbox.claim(document, event) is True
        assert inbox.claim(document, event) is False


def test_claims_of_the_same_instant_keep_the_newest_in_the_order_they_were_taken(
    inbox: DocumentInbox,
) -> None:
    """A burst within one millisecond (the clock here never moves): the capacity keeps the last
    claims taken, not an arbitrary few of equal time, also across the document's JSON."""
    document: dict[str, Any] = {}
    events = [order_created() for _ in range(12)]
    for event in events:
        inbox.claim(document, event)
        document = json.loads(json.dumps(document, sort_keys=True))

    assert set(document[INBOX_FIELD]["service-cart"]) == {e.event_id for e in events[-5:]}


@pytest.mark.parametrize(
    "damaged",
    [["not", "a", "mapping"], {"service-cart": "text"}, {"service-cart": {"id": "yesterday"}}],
    ids=["field", "consumer's claims", "a claim"],
)
def test_a_damaged_inbox_fails_the_claim_rather_than_forget_what_was_handled(
    inbox: DocumentInbox, damaged: object
) -> None:
    document: dict[str, Any] = {INBOX_FIELD: damaged}

    with pytest.raises(DamagedInbox):
        inbox.claim(document, order_created())
    assert document == {INBOX_FIELD: damaged}


def test_an_event_without_a_uuid_event_id_is_poison(inbox: DocumentInbox) -> None:
    event = order_created()
    event.event_id = "not-a-uuid"

    with pytest.raises(InvalidEventId):
        inbox.claim({}, event)


def test_an_inbox_needs_a_consumer_name() -> None:
    with pytest.raises(ValueError, match="consumer"):
        DocumentInbox("", retention=timedelta(days=1))


def test_the_claim_is_keyed_by_the_event_id_not_the_order() -> None:
    inbox = DocumentInbox("service-cart", retention=timedelta(days=1))
    order_id = str(uuid.uuid4())
    document: dict[str, Any] = {}

    assert inbox.claim(document, order_created(order_id)) is True
    assert inbox.claim(document, order_created(order_id)) is True
