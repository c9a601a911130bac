"""Free-text checks shared by the services."""

from __future__ import annotations

import pytest

from chassis.errors import InvalidArgument
from chassis.validation import checked_text


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
