"""Checks at a service's edge that every service (and the gateway) applies alike: free text that
shows what it says, and money amounts that no cart or order total can overflow."""

from __future__ import annotations

import unicodedata

from chassis.errors import InvalidArgument

# A price of at most 10^12 cents: 100 units x 50 lines x 10^12 = 5 * 10^15, far below int64's
# 9.2 * 10^18, so no line, cart or order total can overflow a protobuf int64 or a bigint.
MAX_PRICE_CENTS = 10**12

# Characters that make text display differently from what it is: bidi embeddings, overrides and
# isolates (an "evil" name rendered backwards), and zero-width ones (two emails or names that look
# identical but differ). Control characters (Unicode category Cc) are refused as well.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff")
_LINE_BREAKS = frozenset("\n\r\t")


def hidden_character(value: str, *, multiline: bool = False) -> str | None:
    """The first character of `value` that hides or disguises text, or None.

    `multiline` text (a description) may hold line breaks and tabs; nothing else may.
    """
    for char in value:
        if char in BIDI_CONTROLS or char in ZERO_WIDTH:
            return char
        if unicodedata.category(char) == "Cc" and not (multiline and char in _LINE_BREAKS):
            return char
    return None


def hidden_character_message(char: str) -> str:
    kind = "a control" if unicodedata.category(char) == "Cc" else "an invisible or bidi-control"
    return f"must not contain {kind} character (U+{ord(char):04X})"


def checked_text(
    value: str, *, field: str, max_len: int, min_len: int = 0, multiline: bool = False
) -> str:
    """`value` when it is `min_len`..`max_len` characters (blank counts as empty), storable, and
    free of characters that disguise it (see `hidden_character`).

    PostgreSQL text cannot hold NUL, and protobuf lets it through: without this check a NUL in any
    field becomes an INTERNAL error at the database instead of an INVALID_ARGUMENT naming the field.
    """
    if "\x00" in value:
        raise InvalidArgument(f"{field} must not contain NUL characters", field=field)
    length = len(value) if value.strip() else 0
    if not min_len <= length <= max_len:
        if min_len:
            message = f"{field} must be {min_len} to {max_len} characters"
        else:
            message = f"{field} must be at most {max_len} characters"
        raise InvalidArgument(message, field=field)
    hidden = hidden_character(value, multiline=multiline)
    if hidden is not None:
        raise InvalidArgument(f"{field} {hidden_character_message(hidden)}", field=field)
    return value


def checked_price_cents(value: int, *, field: str = "price_cents") -> int:
    """A positive price of at most MAX_PRICE_CENTS."""
    if not 0 < value <= MAX_PRICE_CENTS:
        raise InvalidArgument(
            f"{field} must be 1 to {MAX_PRICE_CENTS} (cents), got {value}", field=field
        )
    return value
