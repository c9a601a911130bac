"""Checks of free text at a service's edge that every service needs alike."""

from __future__ import annotations

from chassis.errors import InvalidArgument


def checked_text(value: str, *, field: str, max_len: int, min_len: int = 0) -> str:
    """`value` when it is `min_len`..`max_len` characters (blank counts as empty) and storable.

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
    return value
