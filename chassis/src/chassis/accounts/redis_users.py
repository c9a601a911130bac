"""Redis accounts: an ACL user per service, confined to the keys under its prefix and to the
commands it runs (Redis 6 or later).

Each run rewrites the whole user (`reset` first, in the same atomic `ACL SETUSER`), so a rotated
password or a dropped command does not linger. The password is given as its SHA-256 (`#...`),
never in clear. When the server keeps its users in an ACL file (`aclfile`), they are saved to it
(`ACL SAVE`), so a restarted Redis still knows them; a server without one (or a managed service
that refuses CONFIG) keeps them until it restarts, and the bootstrap must then run again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from chassis.accounts.plan import RedisAccount
from chassis.logging import get_logger
from chassis.redis_client import create_redis

TIMEOUT_S = 5.0
# What the chassis's client itself sends on a connection: its health check (PING) and SELECT when
# the URL names a database other than 0 (key patterns hold in every database).
CLIENT_COMMANDS = ("ping", "select")
_log = get_logger(__name__)


def acl_rules(account: RedisAccount) -> list[str]:
    """The `ACL SETUSER` rules of `account`, after its name."""
    digest = hashlib.sha256(account.credentials.password.encode()).hexdigest()
    commands = dict.fromkeys((*CLIENT_COMMANDS, *account.commands))
    return [
        "reset",
        "on",
        f"#{digest}",
        f"~{account.key_pattern}",
        "resetchannels",
        "-@all",
        *(f"+{command}" for command in commands),
    ]


async def _save_if_kept_in_a_file(admin: Redis) -> None:
    try:
        config = await admin.config_get("aclfile")
    except ResponseError as error:
        _log.warning("redis_acl_not_saved", reason=str(error))
        return
    if config.get("aclfile"):
        await admin.acl_save()
        _log.info("redis_acl_saved")


async def apply(admin_url: str, accounts: tuple[RedisAccount, ...]) -> None:
    """Every account's ACL user, through the administrator at `admin_url`."""
    if not accounts:
        return
    admin = create_redis(admin_url, timeout_seconds=TIMEOUT_S, decode_responses=True)
    try:
        for account in accounts:
            user = account.credentials.user
            # The rules as Redis documents them (the client's acl_setuser reorders its own).
            setuser = cast(Callable[..., Awaitable[Any]], admin.execute_command)
            await setuser("ACL", "SETUSER", user, *acl_rules(account))
            _log.info(
                "redis_user_ready", service=account.service, user=user, keys=account.key_pattern
            )
        await _save_if_kept_in_a_file(admin)
    finally:
        await admin.aclose()


async def delete(admin_url: str, users: list[str]) -> None:
    """Remove ACL users (their connections are closed by Redis)."""
    admin = create_redis(admin_url, timeout_seconds=TIMEOUT_S, decode_responses=True)
    try:
        if users:
            await admin.acl_deluser(*users)
            await _save_if_kept_in_a_file(admin)
    finally:
        await admin.aclose()


async def verify(account: RedisAccount) -> None:
    """The user logs in with the URL the service is given."""
    client = create_redis(account.credentials.url, timeout_seconds=TIMEOUT_S)
    try:
        await client.ping()
    finally:
        await client.aclose()
