"""One function per use case: Register, Login, GetUser, GetJwks and the admin bootstrap."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter

from chassis.auth import Principal
from chassis.errors import (
    DomainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from chassis.logging import get_logger
from user_service.domain import (
    Role,
    User,
    parse_user_id,
    validate_full_name,
    validate_login_input,
    validate_new_email,
    validate_new_password,
)
from user_service.passwords import PasswordHashing
from user_service.store import UserStore
from user_service.throttle import ClientRateLimit, LoginThrottle
from user_service.tokens import IssuedToken, PublicJwk, TokenIssuer

log = get_logger(__name__)

# One message for an unknown email and a wrong password, so neither reveals that an account exists.
INVALID_CREDENTIALS = "invalid email or password"
ADMIN_FULL_NAME = "Administrator"

LOGINS = Counter(
    "user_logins_total",
    "Login attempts by outcome (success, invalid_credentials, throttled, unavailable, invalid)",
    ["outcome"],
)
_OUTCOMES: dict[type[DomainError], str] = {
    Unauthenticated: "invalid_credentials",
    ResourceExhausted: "throttled",
    Unavailable: "unavailable",
    InvalidArgument: "invalid",
}


@dataclass(frozen=True, slots=True)
class Accounts:
    """The adapters the handlers work with, wired once in main."""

    store: UserStore
    passwords: PasswordHashing
    throttle: LoginThrottle
    tokens: TokenIssuer
    login_rate: ClientRateLimit
    register_rate: ClientRateLimit


async def register(
    accounts: Accounts, *, email: str, password: str, full_name: str, client: str
) -> User:
    normalised = validate_new_email(email)
    validate_new_password(password)
    name = validate_full_name(full_name)
    await accounts.register_rate.take(client)
    password_hash = await accounts.passwords.hash(password)
    user = await accounts.store.create(
        email=normalised, full_name=name, password_hash=password_hash, role=Role.CUSTOMER
    )
    log.info("account_registered", user_id=str(user.id))
    return user


async def login(accounts: Accounts, *, email: str, password: str, client: str) -> IssuedToken:
    try:
        token = await _check_credentials(accounts, email=email, password=password, client=client)
    except DomainError as error:
        LOGINS.labels(outcome=_OUTCOMES.get(type(error), "error")).inc()
        raise
    LOGINS.labels(outcome="success").inc()
    return token


async def _check_credentials(
    accounts: Accounts, *, email: str, password: str, client: str
) -> IssuedToken:
    normalised, password = validate_login_input(email, password)
    await accounts.login_rate.take(client)
    delay = await accounts.throttle.begin_attempt(normalised, client)
    try:
        if delay:
            await asyncio.sleep(delay)
        user = await accounts.store.by_email(normalised)
        if user is None:
            await accounts.passwords.burn_verification(password)
        else:
            verification = await accounts.passwords.verify(user.password_hash, password)
    except (Unavailable, ResourceExhausted, asyncio.CancelledError):
        # No verdict on the password (an outage, a full hashing pool, the caller's deadline):
        # the attempt does not count against its owner.
        await accounts.throttle.attempt_abandoned(normalised, client)
        raise
    if user is None or not verification.matches:
        raise await _failed_login(accounts, normalised, client)
    if verification.needs_rehash:
        await _rehash(accounts, user, password)
    await accounts.throttle.attempt_succeeded(normalised, client)
    log.info("login_succeeded", user_id=str(user.id))
    return accounts.tokens.issue(user)


async def _failed_login(accounts: Accounts, email: str, client: str) -> Unauthenticated:
    """Count the failure, then hand back the one error every failed login gets."""
    await accounts.throttle.attempt_failed(email, client)
    log.info("login_failed")
    return Unauthenticated(INVALID_CREDENTIALS)


async def _rehash(accounts: Accounts, user: User, password: str) -> None:
    new_hash = await accounts.passwords.hash(password)
    try:
        replaced = await accounts.store.replace_password_hash(
            user.id, old=user.password_hash, new=new_hash
        )
    except (
        Unavailable,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        OSError,
        TimeoutError,
    ) as error:
        # The upgrade is opportunistic: the password was proven, so the login must not fail
        # because this write did; the next login tries again.
        log.warning("password_rehash_not_stored", user_id=str(user.id), error=type(error).__name__)
        return
    if replaced:
        log.info("password_rehashed", user_id=str(user.id))


async def get_user(accounts: Accounts, *, caller: Principal, user_id: str) -> User:
    """An account, to its owner or an admin only (the caller's token was verified)."""
    wanted = parse_user_id(user_id)
    if str(wanted) != caller.user_id and not caller.is_admin:
        raise PermissionDenied("a token may read only its own account")
    user = await accounts.store.by_id(wanted)
    if user is None:
        raise NotFound("no account with this id", field="id")
    return user


def get_jwks(accounts: Accounts) -> list[PublicJwk]:
    return accounts.tokens.jwks()


async def bootstrap_admin(
    store: UserStore, passwords: PasswordHashing, *, email: str, password: str
) -> None:
    """Create the admin account once; every later start (or a concurrent replica) changes nothing.

    An existing account keeps its password and role: promoting whoever registered the address
    first would hand admin rights to them.
    """
    normalised = validate_new_email(email)
    validate_new_password(password)
    created = await store.create_if_absent(
        email=normalised,
        full_name=ADMIN_FULL_NAME,
        password_hash=await passwords.hash(password),
        role=Role.ADMIN,
    )
    if created is not None:
        log.info("admin_account_created", user_id=str(created.id))
        return
    existing = await store.by_email(normalised)
    if existing is not None and existing.role is not Role.ADMIN:
        log.error(
            "admin_account_not_created",
            reason="ADMIN_EMAIL belongs to a non-admin account; it was not promoted",
        )
    else:
        log.info("admin_account_exists")
