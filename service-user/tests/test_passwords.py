"""Password hashing: argon2id, verification, and detection of outdated parameters."""

from user_service.passwords import PasswordHashing

LOW = {"time_cost": 1, "memory_cost_kib": 64, "parallelism": 1}


async def test_hash_is_argon2id_and_never_the_password() -> None:
    hashing = PasswordHashing(**LOW)
    password_hash = await hashing.hash("correct horse")
    assert password_hash.startswith("$argon2id$")
    assert "correct horse" not in password_hash


async def test_right_password_matches_and_wrong_one_does_not() -> None:
    hashing = PasswordHashing(**LOW)
    password_hash = await hashing.hash("correct horse")
    assert (await hashing.verify(password_hash, "correct horse")).matches
    assert not (await hashing.verify(password_hash, "wrong horse")).matches


async def test_hash_made_with_other_parameters_needs_rehash() -> None:
    old_hash = await PasswordHashing(**LOW).hash("correct horse")
    stronger = PasswordHashing(time_cost=2, memory_cost_kib=128, parallelism=1)
    verification = await stronger.verify(old_hash, "correct horse")
    assert verification.matches
    assert verification.needs_rehash


async def test_hash_made_with_current_parameters_needs_no_rehash() -> None:
    hashing = PasswordHashing(**LOW)
    verification = await hashing.verify(await hashing.hash("correct horse"), "correct horse")
    assert verification.matches
    assert not verification.needs_rehash
