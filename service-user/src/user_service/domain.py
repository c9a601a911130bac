"""Account rules with no I/O: email normalisation, password and name policy, the User record."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime

from email_validator import EmailNotValidError, validate_email

from chassis.errors import InvalidArgument
from chassis.validation import checked_text, hidden_character, hidden_character_message

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
FULL_NAME_MAX_LENGTH = 200
# RFC 5321 limits a forward path to 254 characters; longer input is never an address.
EMAIL_MAX_LENGTH = 254
ADMIN_PASSWORD_MIN_LENGTH = 12
# Passwords printed in examples, compose files and docs (this repository's among them): an admin
# account created with one of them is an open door, so none is ever used for one.
WELL_KNOWN_ADMIN_PASSWORDS = frozenset(
    {
        "change-me-admin",
        "change-me-please",
        "change me please",
        "changeme",
        "change-me",
        "admin",
        "administrator",
        "password",
        "admin-password",
        "adminadmin",
        "admin123",
        "password123",
        "secret",
    }
)


class Role(enum.StrEnum):
    """What an account may do; the value is stored and carried in the token's `role` claim."""

    CUSTOMER = "customer"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class User:
    """A stored account. `password_hash` never leaves the service."""

    id: uuid.UUID
    email: str
    full_name: str
    role: Role
    password_hash: str
    created_at: datetime


def normalise_email(raw: str) -> str:
    """Trim and lower-case an address so that letter case never makes two accounts."""
    return raw.strip().lower()


def validate_new_email(raw: str) -> str:
    """Return the normalised address to store, or raise InvalidArgument(field="email")."""
    email = normalise_email(raw)
    if not email:
        raise InvalidArgument("email is required", field="email")
    if len(email) > EMAIL_MAX_LENGTH:
        raise InvalidArgument(f"email must be at most {EMAIL_MAX_LENGTH} characters", field="email")
    hidden = hidden_character(email)
    if hidden is not None:
        raise InvalidArgument(f"email {hidden_character_message(hidden)}", field="email")
    try:
        # No DNS lookups: registration must not depend on the network or leak timing about domains.
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as error:
        raise InvalidArgument(f"email is not a valid address: {error}", field="email") from error
    return email


def validate_new_password(password: str) -> str:
    """Return the password when it satisfies the length policy, else raise on field "password"."""
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        raise InvalidArgument(
            f"password must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters",
            field="password",
        )
    return password


def admin_password_weakness(password: str) -> str | None:
    """Why `password` must not protect the admin account, or None when it may."""
    if password.strip().lower() in WELL_KNOWN_ADMIN_PASSWORDS:
        return "is a well-known default password"
    if len(password) < ADMIN_PASSWORD_MIN_LENGTH:
        return f"is shorter than {ADMIN_PASSWORD_MIN_LENGTH} characters"
    return None


def validate_full_name(raw: str) -> str:
    """Return the trimmed display name (1..200 characters), else raise on field "full_name"."""
    return checked_text(raw.strip(), field="full_name", min_len=1, max_len=FULL_NAME_MAX_LENGTH)


def validate_login_input(email: str, password: str) -> tuple[str, str]:
    """Check only the shape of login input; whether the account exists is not revealed here."""
    normalised = normalise_email(email)
    if not normalised:
        raise InvalidArgument("email is required", field="email")
    if len(normalised) > EMAIL_MAX_LENGTH:
        raise InvalidArgument(f"email must be at most {EMAIL_MAX_LENGTH} characters", field="email")
    if not password:
        raise InvalidArgument("password is required", field="password")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise InvalidArgument(
            f"password must be at most {PASSWORD_MAX_LENGTH} characters", field="password"
        )
    return normalised, password


def parse_user_id(raw: str) -> uuid.UUID:
    """Parse an account id, raising InvalidArgument(field="id") for anything but a UUID."""
    try:
        return uuid.UUID(raw.strip())
    except ValueError as error:
        raise InvalidArgument("id must be a UUID", field="id") from error
