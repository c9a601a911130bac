"""Free-text checks shared by the services."""

from __future__ import annotations

import pytest

from chassis.errors import InvalidArgument
from chassis.validation import MAX_PRICE_CENTS, checked_price_cents, checked_text


def test_text_within_bounds_is_returned_unchanged() -> None:
    assert checked_text("  Oak Chair ", field="name", min_len=1, max_len=20) == "  Oak Chair "


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "name must be 1 to 5 characters"),
        ("   ", "name must be 1 to 5 characters"),
        ("toolong", "name must be 1 to 5 characters"),
        ("a\x00b", "name must not contain NUL characters"),
    ],
)
def test_bad_text_is_invalid_argument_naming_the_field(value: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        checked_text(value, field="name", min_len=1, max_len=5)
    assert caught.value.field == "name"
    assert str(caught.value) == message


def test_optional_text_may_be_empty_but_not_too_long() -> None:
    assert checked_text("", field="description", max_len=3) == ""
    with pytest.raises(InvalidArgument, match="description must be at most 3 characters"):
        checked_text("four", field="description", max_len=3)


@pytest.mark.parametrize(
    "char",
    ["\u202e", "\u2066", "\u200b", "\u200d", "\u2060", "\ufeff", "\x07", "\n", "\x1b", "\x85"],
    ids=["rlo", "lri", "zwsp", "zwj", "word-joiner", "bom", "bell", "newline", "escape", "nel"],
)
def test_text_that_hides_or_disguises_what_it_says_is_refused(char: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        checked_text(f"Ad{char}a", field="full_name", min_len=1, max_len=50)
    assert caught.value.field == "full_name"
    assert f"U+{ord(char):04X}" in caught.value.message


def test_multiline_text_keeps_its_line_breaks_but_not_other_controls() -> None:
    assert checked_text("one\r\ntwo\tthree", field="description", max_len=50, multiline=True)
    with pytest.raises(InvalidArgument, match=r"U\+202E"):
        checked_text("one\u202eowt", field="description", max_len=50, multiline=True)


def test_letters_of_every_script_and_emoji_pass() -> None:
    for text in ("Zoë Ångström", "李小龍", "مريم", "Ada 🚀"):
        assert checked_text(text, field="full_name", min_len=1, max_len=50) == text


def test_a_price_is_positive_and_capped_so_no_total_can_overflow_int64() -> None:
    assert checked_price_cents(MAX_PRICE_CENTS) == MAX_PRICE_CENTS
    assert 100 * 50 * MAX_PRICE_CENTS < 2**63
    for bad in (0, -1, MAX_PRICE_CENTS + 1, 2**62):
        with pytest.raises(InvalidArgument) as caught:
            checked_price_cents(bad)
        assert caught.value.field == "price_cents"
