"""Account rules: how emails, passwords, names and ids are accepted or refused."""

import uuid

import pytest

from chassis.errors import InvalidArgument
from user_service.domain import (
    normalise_email,
    parse_user_id,
    validate_full_name,
    validate_login_input,
    validate_new_email,
    validate_new_password,
)


def test_email_is_trimmed_and_lower_cased() -> None:
    assert validate_new_email("  Alice.Smith@Example.COM \n") == "alice.smith@example.com"


def test_emails_differing_only_in_case_normalise_to_the_same_address() -> None:
    assert normalise_email("BOB@example.com") == normalise_email("bob@EXAMPLE.com")


@pytest.mark.parametrize(
    "email",
    ["", "   ", "not-an-email", "a@", "@example.com", "a b@example.com", "x" * 250 + "@e.io"],
)
def test_malformed_email_is_rejected_on_field_email(email: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_new_email(email)
    assert raised.value.field == "email"


def test_email_validation_does_not_need_dns() -> None:
    assert validate_new_email("someone@no-such-domain-7f3a9c.com") == (
        "someone@no-such-domain-7f3a9c.com"
    )


@pytest.mark.parametrize("password", ["", "short", "1234567", "x" * 129])
def test_password_outside_8_to_128_characters_is_rejected(password: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_new_password(password)
    assert raised.value.field == "password"


@pytest.mark.parametrize("password", ["12345678", "x" * 128])
def test_password_of_8_or_128_characters_is_accepted(password: str) -> None:
    assert validate_new_password(password) == password


@pytest.mark.parametrize("full_name", ["", "   ", "n" * 201])
def test_full_name_outside_1_to_200_characters_is_rejected(full_name: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_full_name(full_name)
    assert raised.value.field == "full_name"


def test_full_name_is_trimmed_but_keeps_its_case() -> None:
    assert validate_full_name("  Ada Lovelace ") == "Ada Lovelace"


def test_login_input_normalises_email_and_requires_both_fields() -> None:
    assert validate_login_input(" A@Example.com", "secret-pw") == ("a@example.com", "secret-pw")
    with pytest.raises(InvalidArgument) as missing_email:
        validate_login_input(" ", "secret-pw")
    assert missing_email.value.field == "email"
    with pytest.raises(InvalidArgument) as missing_password:
        validate_login_input("a@example.com", "")
    assert missing_password.value.field == "password"


def test_user_id_must_be_a_uuid() -> None:
    user_id = uuid.uuid4()
    assert parse_user_id(str(user_id)) == user_id
    with pytest.raises(InvalidArgument) as raised:
        parse_user_id("42")
    assert raised.value.field == "id"
