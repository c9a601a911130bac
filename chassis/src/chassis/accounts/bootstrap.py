"""`platform-bootstrap`: every service's accounts of least privilege, in one idempotent step.

    platform-bootstrap [--accounts FILE] [--dev-credentials FILE]

From the accounts file (deploy/accounts/accounts.toml) and the credentials each service is given
(`<PREFIX>_POSTGRES_URL`, `<PREFIX>_REDIS_URL`, `<PREFIX>_AMQP_URL`, the user and password in the
URL), through the stores' administrators (POSTGRES_ADMIN_URL, REDIS_ADMIN_URL, RABBITMQ_ADMIN_URL):
a PostgreSQL role owning the service's database and nothing else, a Redis ACL user confined to
its key prefix and commands, a RabbitMQ user limited to its queues and the events exchange. Then
every account logs in with its own URL, as the service will. Run it again at any time: it brings
each account back to exactly this (a changed password, a handed-over database), and touches
nothing else. `--dev-credentials` first makes up the missing credentials (random passwords, for
`make dev`) and keeps them in that git-ignored env file.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.exceptions import ConnectionError as RedisConnectionError

from chassis.accounts import postgres_roles, rabbitmq_users, redis_users
from chassis.accounts.plan import (
    EVENTS_CATALOGUE,
    Accounts,
    PlanError,
    ServiceAccess,
    catalogue_bindings,
    load_plan,
    resolve,
)
from chassis.accounts.rabbitmq_users import RabbitmqAdmin
from chassis.logging import configure_logging, get_logger
from chassis.settings import AmqpSettings, load_settings

_log = get_logger("chassis.accounts")
# A store not reachable yet (a container still starting): the whole step is tried again.
_OUTAGES = (OSError, TimeoutError, asyncpg.CannotConnectNowError, RedisConnectionError)


class BootstrapSettings(BaseSettings):
    """The administrators the bootstrap acts through and the deployment's names. The admin URLs
    fall back to POSTGRES_URL and REDIS_URL, which is what `make dev`'s .env names."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    service_name: ClassVar[str] = "platform-bootstrap"

    accounts_file: Path = Field(
        Path("deploy/accounts/accounts.toml"), validation_alias="ACCOUNTS_FILE"
    )
    postgres_admin_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432",
        validation_alias=AliasChoices("POSTGRES_ADMIN_URL", "POSTGRES_URL"),
    )
    redis_admin_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_ADMIN_URL", "REDIS_URL")
    )
    rabbitmq_admin_url: str = Field("rabbitmqctl", validation_alias="RABBITMQ_ADMIN_URL")
    # The generated module whose events name their consumers: each consumer's queue is bound to
    # their routing keys.
    events_catalogue: str = Field(EVENTS_CATALOGUE, validation_alias="EVENTS_CATALOGUE")
    redis_key_prefix: str = Field("", validation_alias="REDIS_KEY_PREFIX")
    # Until every store answers (containers starting), and every account logs in (the broker
    # applies an import asynchronously).
    bootstrap_wait_seconds: float = Field(60.0, gt=0, validation_alias="BOOTSTRAP_WAIT_SECONDS")
    log_level: str = "INFO"


def _user_of(url: str) -> str | None:
    return unquote(urlsplit(url).username or "") or None


def resolve_accounts(
    plan: list[ServiceAccess],
    environ: Mapping[str, str],
    settings: BootstrapSettings,
    amqp: AmqpSettings,
) -> Accounts:
    admin = RabbitmqAdmin(settings.rabbitmq_admin_url)
    return resolve(
        plan,
        environ,
        redis_key_prefix=settings.redis_key_prefix,
        amqp=amqp,
        admins={
            "postgres": _user_of(settings.postgres_admin_url),
            "redis": _user_of(settings.redis_admin_url),
            "rabbitmq": admin.admin_user,
        },
    )


async def _until(within: float, what: str, step: Callable[[], Awaitable[None]]) -> None:
    """`step`, again after an outage of a store until `within` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        try:
            await step()
            return
        except _OUTAGES as error:
            if time.monotonic() > deadline:
                raise
            _log.info("bootstrap_waiting", step=what, error=f"{type(error).__name__}: {error}")
            await asyncio.sleep(1.0)


async def bootstrap(
    accounts: Accounts,
    *,
    postgres_admin_url: str,
    redis_admin_url: str,
    rabbitmq: RabbitmqAdmin,
    wait_seconds: float = 60.0,
) -> None:
    """Create or bring back every account of `accounts`, then log in with each."""
    await _until(
        wait_seconds,
        "postgres",
        lambda: postgres_roles.apply(postgres_admin_url, accounts.postgres),
    )
    await _until(wait_seconds, "redis", lambda: redis_users.apply(redis_admin_url, accounts.redis))
    await _until(
        wait_seconds, "rabbitmq", lambda: rabbitmq_users.apply(rabbitmq, accounts.rabbitmq)
    )
    for postgres_account in accounts.postgres:
        await _until_logged_in(
            wait_seconds, "postgres", postgres_account.service,
            functools.partial(postgres_roles.verify, postgres_account),
        )  # fmt: skip
    for redis_account in accounts.redis:
        await _until_logged_in(
            wait_seconds, "redis", redis_account.service,
            functools.partial(redis_users.verify, redis_account),
        )  # fmt: skip
    for rabbitmq_account in accounts.rabbitmq:
        await _until_logged_in(
            wait_seconds, "rabbitmq", rabbitmq_account.service,
            functools.partial(rabbitmq_users.verify, rabbitmq_account),
        )  # fmt: skip


async def _until_logged_in(
    within: float, store: str, service: str, check: Callable[[], Awaitable[None]]
) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            await check()
            break
        except Exception as error:  # a refused login, until the store has applied the change
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service} cannot log in to {store}: {error}") from error
            await asyncio.sleep(0.5)
    _log.info("account_logs_in", store=store, service=service)


# ------------------------------------------------------------------ development credentials


def read_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, found, value = line.strip().partition("=")
        if found and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


def _dev_url(server_url: str, user: str) -> str:
    """`server_url`'s scheme, host, port and path with `user` and a new random password."""
    parts = urlsplit(server_url)
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{quote(user, safe='')}:{secrets.token_hex(24)}@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def make_dev_credentials(
    plan: list[ServiceAccess], path: Path, settings: BootstrapSettings, amqp: AmqpSettings
) -> dict[str, str]:
    """The credentials kept in `path`, with those missing made up and added to it."""
    kept = read_env_file(path) if path.exists() else {}
    servers = {
        "postgres": settings.postgres_admin_url,
        "redis": settings.redis_admin_url,
        "rabbitmq": amqp.amqp_url,
    }
    made: dict[str, str] = {}
    for access in plan:
        for store in access.stores():
            variable = access.url_variable(store)
            if variable not in kept:
                user = access.service.replace("-", "_") if store == "postgres" else access.service
                made[variable] = _dev_url(servers[store], user)
    if made:
        path.parent.mkdir(parents=True, exist_ok=True)
        header = "" if kept else "# Development credentials of each service (platform-bootstrap).\n"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(descriptor, "a") as file:
            file.write(header + "".join(f"{name}={url}\n" for name, url in made.items()))
        _log.info("dev_credentials_made", file=str(path), variables=sorted(made))
    return {**kept, **made}


# ------------------------------------------------------------------ command


async def _main(accounts_file: Path | None, dev_credentials: Path | None) -> None:
    settings = load_settings(BootstrapSettings)
    amqp = load_settings(AmqpSettings)
    configure_logging("platform-bootstrap", settings.log_level)
    plan = load_plan(
        accounts_file or settings.accounts_file, catalogue_bindings(settings.events_catalogue)
    )
    environ: dict[str, str] = dict(os.environ)
    if dev_credentials is not None:
        environ.update(make_dev_credentials(plan, dev_credentials, settings, amqp))
    accounts = resolve_accounts(plan, environ, settings, amqp)
    await bootstrap(
        accounts,
        postgres_admin_url=settings.postgres_admin_url,
        redis_admin_url=settings.redis_admin_url,
        rabbitmq=RabbitmqAdmin(settings.rabbitmq_admin_url),
        wait_seconds=settings.bootstrap_wait_seconds,
    )
    _log.info(
        "bootstrap_done",
        postgres=[a.credentials.user for a in accounts.postgres],
        redis=[a.credentials.user for a in accounts.redis],
        rabbitmq=[a.credentials.user for a in accounts.rabbitmq],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="platform-bootstrap",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--accounts", type=Path, help="the accounts file (default: ACCOUNTS_FILE)")
    parser.add_argument(
        "--dev-credentials",
        type=Path,
        help="an env file of the services' credentials, completed with new random ones",
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(_main(args.accounts, args.dev_credentials))
    except PlanError as error:
        sys.stderr.write(f"platform-bootstrap: {error}\n")
        raise SystemExit(2) from None
    except Exception as error:
        sys.stderr.write(f"platform-bootstrap: failed: {type(error).__name__}: {error}\n")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
