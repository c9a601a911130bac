"""The payment state machine, pure: what each saga event records, that events commute and repeat
harmlessly, what the payment does next in every state, where a provider's answer moves it, the
backoff, and that the states are exactly those of the protos."""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial, reduce

import pytest

from chassis.errors import InvalidArgument, NotFound
from ecommerce.payment.v1 import payment_pb2
from payment_service import domain
from payment_service.domain import (
    CLOSE,
    START_AUTHORIZING,
    Answer,
    Call,
    Move,
    Operation,
    Payment,
    PaymentEvent,
    PaymentState,
    Wait,
)
from payment_service.proto_mapping import STATES

ORDER = uuid.uuid4()
USER = uuid.uuid4()
intent = partial(
    domain.with_intent, user_id=USER, amount_cents=1250, currency="EUR", payment_token="pm_card_ok"
)


def known(state: PaymentState = PaymentState.PENDING, **flags: bool) -> Payment:
    return replace(intent(domain.new_payment(ORDER)), state=state, **flags)


def test_the_states_are_the_protos_payment_states() -> None:
    assert STATES.names == tuple(state.value for state in PaymentState)


def test_nothing_happens_before_the_intent_is_known_whatever_came_early() -> None:
    early = domain.with_cancelled(
        domain.with_confirmed(domain.with_stock_reserved(domain.new_payment(ORDER))),
        was_confirmed=True,
    )

    assert domain.next_step(early) == Wait()
    assert (early.stock_reserved, early.confirmed, early.cancel_requested) == (True, True, True)
    assert early.cancelled_after_confirmation


def test_the_first_intent_stays() -> None:
    first = intent(domain.new_payment(ORDER))
    again = domain.with_intent(
        first, user_id=uuid.uuid4(), amount_cents=1, currency="USD", payment_token="pm_x"
    )

    assert again == first
    assert (first.user_id, first.amount_cents, first.currency) == (USER, 1250, "EUR")


Change = Callable[[Payment], Payment]
EVENTS: dict[str, Change] = {
    "created": intent,
    "reserved": domain.with_stock_reserved,
    "confirmed": domain.with_confirmed,
    "cancelled": partial(domain.with_cancelled, was_confirmed=True),
    "cancelled_unconfirmed": partial(domain.with_cancelled, was_confirmed=False),
}


@pytest.mark.parametrize("names", list(itertools.permutations(EVENTS, 3)))
def test_events_commute_and_repeat_harmlessly(names: tuple[str, ...]) -> None:
    changes = [EVENTS[name] for name in names]
    start = domain.new_payment(ORDER)
    forward = reduce(lambda p, change: change(p), changes, start)
    backward = reduce(lambda p, change: change(p), reversed(changes), start)
    twice = reduce(lambda p, change: change(change(p)), changes, start)

    assert forward == backward == twice


@pytest.mark.parametrize(
    ("payment", "step"),
    [
        (known(), Wait()),
        (known(stock_reserved=True), START_AUTHORIZING),
        (known(cancel_requested=True), CLOSE),
        (known(stock_reserved=True, cancel_requested=True), CLOSE),
        (known(PaymentState.AUTHORIZING, stock_reserved=True), Call(Operation.AUTHORIZE)),
        (known(PaymentState.AUTHORIZING, cancel_requested=True), Call(Operation.VOID)),
        (known(PaymentState.AUTHORIZED), Wait()),
        (known(PaymentState.AUTHORIZED, confirmed=True), Call(Operation.CAPTURE)),
        (known(PaymentState.AUTHORIZED, cancel_requested=True), Call(Operation.VOID)),
        (
            known(
                PaymentState.AUTHORIZED, cancel_requested=True, cancelled_after_confirmation=True
            ),
            Call(Operation.REFUND),
        ),
        (
            known(PaymentState.AUTHORIZED, confirmed=True, cancel_requested=True),
            Call(Operation.REFUND),
        ),
        (known(PaymentState.CAPTURED), Wait()),
        (known(PaymentState.CAPTURED, cancel_requested=True), Call(Operation.REFUND)),
        (known(PaymentState.DECLINED, cancel_requested=True), Wait()),
        (known(PaymentState.VOIDED, confirmed=True, cancel_requested=True), Wait()),
        (known(PaymentState.REFUNDED, cancel_requested=True), Wait()),
    ],
)
def test_the_next_step_of_every_state(payment: Payment, step: domain.Step) -> None:
    assert domain.next_step(payment) == step


def test_a_closed_intent_publishes_voided_and_authorising_publishes_nothing() -> None:
    assert Move(PaymentState.VOIDED, PaymentEvent.VOIDED) == CLOSE
    assert Move(PaymentState.AUTHORIZING, None) == START_AUTHORIZING


@pytest.mark.parametrize(
    ("operation", "answer", "move"),
    [
        (
            Operation.AUTHORIZE,
            Answer.AUTHORIZED,
            Move(PaymentState.AUTHORIZED, PaymentEvent.AUTHORIZED),
        ),
        (Operation.AUTHORIZE, Answer.DECLINED, Move(PaymentState.DECLINED, PaymentEvent.DECLINED)),
        (Operation.AUTHORIZE, Answer.VOIDED, Move(PaymentState.VOIDED, PaymentEvent.VOIDED)),
        (Operation.CAPTURE, Answer.CAPTURED, Move(PaymentState.CAPTURED, None)),
        (Operation.VOID, Answer.VOIDED, Move(PaymentState.VOIDED, PaymentEvent.VOIDED)),
        (Operation.REFUND, Answer.REFUNDED, Move(PaymentState.REFUNDED, PaymentEvent.REFUNDED)),
        (Operation.CAPTURE, Answer.VOIDED, None),
        (Operation.VOID, Answer.CAPTURED, None),
    ],
)
def test_where_an_answer_moves_a_payment(
    operation: Operation, answer: Answer, move: Move | None
) -> None:
    assert domain.outcome(operation, answer) == move


def test_every_step_from_a_reachable_payment_ends_in_a_final_state_without_a_second_event() -> None:
    """Walk every combination of flags from PENDING, answering each call as the provider would
    succeed: each path publishes at most one of voided/refunded/declined and ends at rest."""
    for flags in itertools.product([False, True], repeat=4):
        reserved, confirmed, cancel, after = flags
        payment = known(
            stock_reserved=reserved,
            confirmed=confirmed,
            cancel_requested=cancel,
            cancelled_after_confirmation=after and cancel,
        )
        events: list[PaymentEvent] = []
        for _ in range(10):
            step = domain.next_step(payment)
            if isinstance(step, Wait):
                break
            if isinstance(step, Call):
                answer = {
                    Operation.AUTHORIZE: Answer.AUTHORIZED,
                    Operation.CAPTURE: Answer.CAPTURED,
                    Operation.VOID: Answer.VOIDED,
                    Operation.REFUND: Answer.REFUNDED,
                }[step.operation]
                move = domain.outcome(step.operation, answer)
                assert move is not None
            else:
                move = step
            payment = replace(payment, state=move.target)
            if move.event is not None:
                events.append(move.event)
        else:
            pytest.fail(f"no rest from {flags}")
        closing = [e for e in events if e is not PaymentEvent.AUTHORIZED]
        assert len(closing) <= 1, (flags, events)
        if cancel:
            assert payment.state in domain.FINAL_STATES
        elif reserved and confirmed:
            assert payment.state is PaymentState.CAPTURED


def test_retry_delays_grow_exponentially_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    delays = [
        domain.retry_delay(n, base_seconds=0.2, max_seconds=5.0, rng=rng) for n in range(1, 12)
    ]

    assert 0.1 <= delays[0] <= 0.2
    assert 0.2 <= delays[1] <= 0.4
    assert 0.4 <= delays[2] <= 0.8
    assert all(2.5 <= d <= 5.0 for d in delays[6:])
    assert domain.retry_delay(10_000, base_seconds=0.2, max_seconds=5.0) <= 5.0


def test_a_payment_is_read_by_its_buyer_or_an_admin_only() -> None:
    payment = known()

    assert domain.check_reader(ORDER, payment, caller_id=str(USER), is_admin=False) is payment
    assert domain.check_reader(ORDER, payment, caller_id=str(uuid.uuid4()), is_admin=True)
    with pytest.raises(NotFound):
        domain.check_reader(ORDER, payment, caller_id=str(uuid.uuid4()), is_admin=False)
    with pytest.raises(NotFound):
        domain.check_reader(ORDER, None, caller_id=str(USER), is_admin=True)
    with pytest.raises(NotFound):
        domain.check_reader(ORDER, domain.new_payment(ORDER), caller_id=str(USER), is_admin=True)


def test_a_malformed_order_id_names_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.parse_id("nope", field="order_id")
    assert caught.value.field == "order_id"


def test_the_proto_state_numbers_round_trip() -> None:
    for state in PaymentState:
        number = STATES.number(state.value)
        assert payment_pb2.PaymentState.Name(number) == f"PAYMENT_STATE_{state.value}"  # type: ignore[arg-type]
