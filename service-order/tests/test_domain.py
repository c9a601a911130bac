"""The order rules, pure: the state machine table, pricing a cart, keys, owners and page tokens."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from chassis.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from chassis.validation import MAX_PRICE_CENTS
from order_service.domain import (
    AUTHORIZE,
    CANCEL_BY_USER,
    CONFIRM,
    CONFIRM_PAID,
    CURRENT_SAGA_VERSION,
    DECLINE,
    EXPIRE,
    PAYMENT_STEPS,
    REFUND,
    REJECT_OUT_OF_STOCK,
    REJECT_PAYMENT_DECLINED,
    TRANSITIONS,
    VOID,
    AlreadyOrdered,
    CancelReason,
    CartLine,
    CartSnapshot,
    LiveOrder,
    Order,
    OrderStatus,
    PaymentStatus,
    PaymentStep,
    ProductPrice,
    SagaVersion,
    Transition,
    check_cancellable_by_user,
    check_owner,
    idempotency_key,
    merged,
    not_yet_ordered,
    order_covering_the_cart,
    payment_effect,
    payment_token,
    price_cart,
    saga_outcome,
)
from order_service.page_tokens import (
    PAGE_SIZE_DEFAULT,
    PageCursor,
    decode_page_token,
    encode_page_token,
    page_request,
)

PENDING, CONFIRMED, CANCELLED = OrderStatus.PENDING, OrderStatus.CONFIRMED, OrderStatus.CANCELLED
V1, V2 = SagaVersion.STOCK_ONLY, SagaVersion.PAYMENT

# (transition, status the order is in) -> (status after, reason after), or None: no move; for
# the saga versions of the last element (the others: no move).
STATE_MACHINE = {
    (CONFIRM, PENDING): ((CONFIRMED, None), {V1}),
    (CONFIRM, CONFIRMED): None,
    (CONFIRM, CANCELLED): None,
    (CONFIRM_PAID, PENDING): ((CONFIRMED, None), {V2}),
    (CONFIRM_PAID, CONFIRMED): None,
    (CONFIRM_PAID, CANCELLED): None,
    (REJECT_OUT_OF_STOCK, PENDING): ((CANCELLED, CancelReason.OUT_OF_STOCK), {V1, V2}),
    (REJECT_OUT_OF_STOCK, CONFIRMED): None,
    (REJECT_OUT_OF_STOCK, CANCELLED): None,
    (REJECT_PAYMENT_DECLINED, PENDING): ((CANCELLED, CancelReason.PAYMENT_DECLINED), {V2}),
    (REJECT_PAYMENT_DECLINED, CONFIRMED): None,
    (REJECT_PAYMENT_DECLINED, CANCELLED): None,
    (EXPIRE, PENDING): ((CANCELLED, CancelReason.TIMEOUT), {V1, V2}),
    (EXPIRE, CONFIRMED): None,
    (EXPIRE, CANCELLED): None,
    (CANCEL_BY_USER, PENDING): ((CANCELLED, CancelReason.USER_CANCELLED), {V1, V2}),
    (CANCEL_BY_USER, CONFIRMED): ((CANCELLED, CancelReason.USER_CANCELLED), {V1, V2}),
    (CANCEL_BY_USER, CANCELLED): None,
}


def test_the_state_machine_table_covers_every_transition_from_every_status() -> None:
    assert {(t, s) for t in TRANSITIONS for s in OrderStatus} == set(STATE_MACHINE)


@pytest.mark.parametrize("version", list(SagaVersion))
@pytest.mark.parametrize(("transition", "status"), list(STATE_MACHINE))
def test_each_transition_moves_only_from_its_sources_to_its_target(
    transition: Transition, status: OrderStatus, version: SagaVersion
) -> None:
    assert transition in TRANSITIONS
    entry = STATE_MACHINE[(transition, status)]
    expected = None if entry is None or version not in entry[1] else entry[0]

    assert transition.allows(status, version) == (expected is not None)
    if expected is not None:
        assert (transition.target, transition.reason) == expected


def test_a_cancelled_order_is_final() -> None:
    assert not any(t.allows(CANCELLED, v) for t in TRANSITIONS for v in SagaVersion)


def test_checkout_places_orders_of_the_payment_saga() -> None:
    assert CURRENT_SAGA_VERSION is V2


@pytest.mark.parametrize(
    ("previous", "transition", "outcome"),
    [
        (PENDING, CONFIRM, "confirmed"),
        (PENDING, CONFIRM_PAID, "confirmed"),
        (PENDING, REJECT_OUT_OF_STOCK, "out_of_stock"),
        (PENDING, REJECT_PAYMENT_DECLINED, "payment_declined"),
        (PENDING, EXPIRE, "timeout"),
        (PENDING, CANCEL_BY_USER, "user_cancelled"),
        (CONFIRMED, CANCEL_BY_USER, None),
    ],
)
def test_the_saga_ends_when_a_pending_order_moves_and_only_then(
    previous: OrderStatus, transition: Transition, outcome: str | None
) -> None:
    assert saga_outcome(previous, transition) == outcome


P = PaymentStatus
# The payment steps forward only: (step) -> the payment statuses it moves from, and its target.
PAYMENT_MOVES = {
    AUTHORIZE: ({P.PENDING}, P.AUTHORIZED),
    DECLINE: ({P.PENDING}, P.DECLINED),
    REFUND: ({P.AUTHORIZED}, P.REFUNDED),
    VOID: ({P.PENDING, P.AUTHORIZED}, P.VOIDED),
}


def test_every_payment_step_moves_forward_only_from_its_sources() -> None:
    assert set(PAYMENT_STEPS) == set(PAYMENT_MOVES)
    for step, (sources, target) in PAYMENT_MOVES.items():
        assert step.target is target
        for status in [None, *PaymentStatus]:
            assert step.allows(status) == (status in sources), (step.name, status)


# (step, order status, payment status) on a version-2 order -> its effect; every other
# combination has none.
PAYMENT_EFFECTS: dict[tuple[PaymentStep, OrderStatus, PaymentStatus], object] = {
    (AUTHORIZE, PENDING, P.PENDING): CONFIRM_PAID,
    (AUTHORIZE, CANCELLED, P.PENDING): P.AUTHORIZED,  # recorded; the order stays cancelled
    (DECLINE, PENDING, P.PENDING): REJECT_PAYMENT_DECLINED,
    (DECLINE, CANCELLED, P.PENDING): P.DECLINED,
    (REFUND, CANCELLED, P.AUTHORIZED): P.REFUNDED,
    (VOID, CANCELLED, P.PENDING): P.VOIDED,
    (VOID, CANCELLED, P.AUTHORIZED): P.VOIDED,
    # Before the event that cancels the order (events of one order come in any order): recorded,
    # the order's status left to that event.
    (VOID, PENDING, P.PENDING): P.VOIDED,
    (VOID, PENDING, P.AUTHORIZED): P.VOIDED,
    (REFUND, PENDING, P.AUTHORIZED): P.REFUNDED,
}


@pytest.mark.parametrize("step", PAYMENT_STEPS, ids=lambda step: step.name)
def test_a_payment_report_moves_a_pending_order_records_on_a_cancelled_one_or_does_nothing(
    step: PaymentStep,
) -> None:
    for status in OrderStatus:
        for payment in PaymentStatus:
            expected = PAYMENT_EFFECTS.get((step, status, payment))
            assert payment_effect(step, status, payment, V2) == expected, (status, payment)
            # A version-1 order has no payment: nothing a payment event says applies to it.
            assert payment_effect(step, status, None, V1) is None


def test_a_confirmed_order_s_payment_stays_authorized_whatever_is_reported() -> None:
    # What the schema's CHECK (orders_confirmed_only_once_paid) holds: a report never makes a
    # CONFIRMED order's payment anything but AUTHORIZED.
    for step in PAYMENT_STEPS:
        assert payment_effect(step, CONFIRMED, P.AUTHORIZED, V2) is None


def product(price_cents: int = 500, currency: str = "USD", name: str = "Lamp") -> ProductPrice:
    return ProductPrice(uuid.uuid4(), name, price_cents, currency)


def test_a_cart_is_priced_from_the_products_in_the_cart_s_order() -> None:
    lamp, desk = product(250, name="Lamp"), product(10_000, name="Desk")
    lines = [CartLine(desk.product_id, 1), CartLine(lamp.product_id, 3)]

    priced = price_cart(lines, {p.product_id: p for p in (lamp, desk)})

    assert [(line.name, line.quantity, line.unit_price_cents) for line in priced.lines] == [
        ("Desk", 1, 10_000),
        ("Lamp", 3, 250),
    ]
    assert [line.line_total_cents for line in priced.lines] == [10_000, 750]
    assert priced.total_cents == 10_750
    assert priced.currency == "USD"


def test_an_empty_cart_cannot_be_checked_out() -> None:
    with pytest.raises(FailedPrecondition, match="the cart is empty"):
        price_cart([], {})


def test_a_vanished_product_is_named() -> None:
    kept, gone = product(), uuid.uuid4()

    with pytest.raises(FailedPrecondition, match=f"product {gone} no longer exists"):
        price_cart([CartLine(kept.product_id, 1), CartLine(gone, 1)], {kept.product_id: kept})


def test_mixed_currencies_are_named() -> None:
    usd, eur = product(currency="USD"), product(currency="EUR")
    lines = [CartLine(usd.product_id, 1), CartLine(eur.product_id, 1)]

    with pytest.raises(FailedPrecondition, match="mixes currencies EUR and USD"):
        price_cart(lines, {usd.product_id: usd, eur.product_id: eur})


@pytest.mark.parametrize("price_cents", [0, -1, MAX_PRICE_CENTS + 1])
def test_a_product_without_a_valid_price_is_refused(price_cents: int) -> None:
    bad = product(price_cents)

    with pytest.raises(FailedPrecondition, match="no valid price"):
        price_cart([CartLine(bad.product_id, 1)], {bad.product_id: bad})


def test_repeated_cart_lines_of_one_product_are_merged_in_first_seen_order() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()

    assert merged([CartLine(a, 1), CartLine(b, 2), CartLine(a, 3)]) == [
        CartLine(a, 4),
        CartLine(b, 2),
    ]


def order(status: OrderStatus) -> Order:
    now = datetime.now(UTC)
    reason = CancelReason.TIMEOUT if status is CANCELLED else None
    return Order(uuid.uuid4(), uuid.uuid4(), status, reason, (), 1, "USD", now, now)


def test_a_user_may_cancel_pending_and_confirmed_orders_but_not_cancelled_ones() -> None:
    check_cancellable_by_user(order(PENDING))
    check_cancellable_by_user(order(CONFIRMED))

    with pytest.raises(FailedPrecondition, match="already cancelled"):
        check_cancellable_by_user(order(CANCELLED))


def test_only_the_token_s_subject_acts_on_its_orders() -> None:
    me = uuid.uuid4()
    check_owner(str(me), me)

    with pytest.raises(PermissionDenied):
        check_owner(str(uuid.uuid4()), me)


@pytest.mark.parametrize("key", ["k", "order-42", "x" * 255, "!~#$%&'*+-.^_`|"])
def test_idempotency_keys_are_1_to_255_visible_ascii_characters(key: str) -> None:
    assert idempotency_key(key) == key


def test_an_absent_idempotency_key_is_none() -> None:
    assert idempotency_key("") is None


@pytest.mark.parametrize(
    "key", ["x" * 256, "two words", "tab\there", "caf\u00e9", "nul\x00", "\x7f"]
)
def test_other_idempotency_keys_are_invalid_arguments_naming_the_field(key: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        idempotency_key(key)

    assert raised.value.field == "idempotency_key"


@pytest.mark.parametrize(
    "token", ["pm_card_ok", "pm_card_declined", "pm_x", "pm_" + "A9_" * 21 + "z", "pm__"]
)
def test_payment_tokens_are_pm_then_1_to_64_letters_digits_or_underscores(token: str) -> None:
    assert payment_token(token) == token


@pytest.mark.parametrize(
    "token",
    [
        "",
        "pm_",
        "card_ok",
        "PM_card_ok",
        "pm_" + "x" * 65,
        "pm_card-ok",
        "pm_card ok",
        "pm_caf\u00e9",
        "pm_card_ok\n",
        " pm_card_ok",
        "4111111111111111",
    ],
)
def test_a_missing_or_malformed_payment_token_is_an_invalid_argument_naming_it(
    token: str,
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        payment_token(token)

    assert raised.value.field == "payment_token"
    assert "4111" not in str(raised.value)  # a mistaken card number is never echoed


def test_a_page_token_carries_its_cursor_exactly() -> None:
    owner = uuid.uuid4()
    cursor = PageCursor(datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC), uuid.uuid4())

    token = encode_page_token(cursor, user_id=owner)

    assert decode_page_token(token, user_id=owner) == cursor


def _edited(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[3] = ord("9") if raw[3] != ord("9") else ord("8")  # a digit of the timestamp
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def test_a_page_token_that_is_garbage_edited_or_another_user_s_is_an_invalid_argument() -> None:
    owner = uuid.uuid4()
    token = encode_page_token(PageCursor(datetime.now(UTC), uuid.uuid4()), user_id=owner)

    for bad, whose in [
        ("garbage", owner),
        ("", owner),
        (_edited(token), owner),
        (token + "AAAA", owner),
        ("\u00e9" * 10, owner),
        ("A" * 500, owner),
        (token, uuid.uuid4()),
    ]:
        with pytest.raises(InvalidArgument) as raised:
            decode_page_token(bad, user_id=whose)
        assert raised.value.field == "page_token", bad


def test_page_size_is_1_to_100_and_0_means_the_default() -> None:
    owner = uuid.uuid4()
    assert page_request(user_id=owner, page_size=0, page_token="").size == PAGE_SIZE_DEFAULT
    assert page_request(user_id=owner, page_size=100, page_token="").size == 100

    for size in (-1, 101):
        with pytest.raises(InvalidArgument) as raised:
            page_request(user_id=owner, page_size=size, page_token="")
        assert raised.value.field == "page_size"


def _snapshot(*lines: tuple[uuid.UUID, int], cleared: tuple[uuid.UUID, ...] = ()) -> CartSnapshot:
    return CartSnapshot(tuple(CartLine(p, q) for p, q in lines), frozenset(cleared))


def _live(status: OrderStatus, *lines: tuple[uuid.UUID, int]) -> LiveOrder:
    return LiveOrder(uuid.uuid4(), status, tuple(CartLine(p, q) for p, q in lines))


def test_what_live_orders_hold_is_not_ordered_again() -> None:
    kettle, mug, tea = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cart = _snapshot((kettle, 3), (mug, 1), (tea, 2))
    live = [
        _live(OrderStatus.PENDING, (kettle, 1)),
        _live(OrderStatus.CONFIRMED, (kettle, 1), (mug, 2)),  # the buyer lowered the mugs since
    ]

    assert not_yet_ordered(cart, live) == [CartLine(kettle, 1), CartLine(tea, 2)]
    assert order_covering_the_cart(cart, live) is None


def test_an_order_the_cart_has_cleared_is_not_subtracted() -> None:
    kettle = uuid.uuid4()
    cleared = _live(OrderStatus.CONFIRMED, (kettle, 2))
    cart = _snapshot((kettle, 2), cleared=(cleared.id,))  # two more, added after it

    assert not_yet_ordered(cart, [cleared]) == [CartLine(kettle, 2)]
    assert order_covering_the_cart(cart, [cleared]) is None


def test_a_cart_wholly_in_live_orders_is_answered_with_the_newest_pending_one() -> None:
    kettle = uuid.uuid4()
    confirmed = _live(OrderStatus.CONFIRMED, (kettle, 1))
    pending = _live(OrderStatus.PENDING, (kettle, 1))
    cart = _snapshot((kettle, 2))

    assert not_yet_ordered(cart, [confirmed, pending]) == []
    assert order_covering_the_cart(cart, [confirmed, pending]) == pending.id


def test_a_cart_wholly_in_confirmed_orders_is_already_ordered() -> None:
    kettle = uuid.uuid4()
    confirmed = _live(OrderStatus.CONFIRMED, (kettle, 1))

    with pytest.raises(AlreadyOrdered, match=str(confirmed.id)):
        order_covering_the_cart(_snapshot((kettle, 1)), [confirmed])


def test_an_empty_cart_is_covered_by_no_order() -> None:
    assert (
        order_covering_the_cart(_snapshot(), [_live(OrderStatus.PENDING, (uuid.uuid4(), 1))])
        is None
    )
