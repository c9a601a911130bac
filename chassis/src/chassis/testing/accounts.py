"""Accounts of least privilege for a test run on the shared servers: made by the bootstrap from the
platform's accounts file, with names unique to the run, and removed at the end of the session
(a role after the databases it owns)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from chassis.accounts import (
    Accounts,
    RabbitmqAdmin,
    bootstrap,
    catalogue_bindings,
    load_plan,
    redis_users,
    resolve,
)
from chassis.postgres import database_url
from chassis.settings import AmqpSettings

CLEANUP_TIMEOUT_S = 30.0


def with_user(server_url: str, user: str, password: str) -> str:
    """`server_url` logging in as `user`."""
    parts = urlsplit(server_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass
class RunAccounts:
    """The servers of the run, and every account made on them so far."""

    run_id: str
    postgres_url: str
    redis_url: str
    amqp_url: str
    rabbitmq: RabbitmqAdmin = field(
        default_factory=lambda: RabbitmqAdmin(os.environ.get("RABBITMQ_ADMIN_URL", "rabbitmqctl"))
    )
    made: list[Accounts] = field(default_factory=list)

    async def make(self, accounts_file: Path, env: dict[str, str], label: str) -> dict[str, str]:
        """Accounts for the platform `env` configures (its database names, REDIS_KEY_PREFIX,
        EVENTS_EXCHANGE, QUEUE_PREFIX), each named `t_<run_id>_<label>_<service>`. Returns each
        service's URL variables (`USER_POSTGRES_URL`, ...) as `make dev` gives them."""
        plan = load_plan(accounts_file, catalogue_bindings())
        servers = {
            "postgres": self.postgres_url,
            "redis": self.redis_url,
            "rabbitmq": self.amqp_url,
        }
        variables: dict[str, str] = {}
        for access in plan:
            user = re.sub(r"[^a-z0-9_]", "_", f"t_{self.run_id}_{label}_{access.service}".lower())
            for store in access.stores():
                password = secrets.token_hex(16)
                variables[access.url_variable(store)] = with_user(servers[store], user, password)
        amqp = AmqpSettings.model_validate(
            {
                "amqp_url": self.amqp_url,
                "events_exchange": env["EVENTS_EXCHANGE"],
                "queue_prefix": env.get("QUEUE_PREFIX", ""),
            }
        )
        accounts = resolve(
            plan,
            {**env, **variables},
            redis_key_prefix=env.get("REDIS_KEY_PREFIX", ""),
            amqp=amqp,
            admins={},
        )
        self.made.append(accounts)
        await bootstrap(
            accounts,
            postgres_admin_url=self.postgres_url,
            redis_admin_url=self.redis_url,
            rabbitmq=self.rabbitmq,
        )
        return variables

    async def restore_redis_users(self) -> None:
        """Every Redis user made so far, again, with the same passwords: what an operator's
        bootstrap does once a Redis that keeps nothing on disk (no ACL file, as on the test
        machines) has restarted empty."""
        await redis_users.apply(self.redis_url, tuple(a for m in self.made for a in m.redis))

    async def remove(self) -> None:
        """Every account made, with the databases its roles own. Each store is cleaned even when
        another one fails (the first failure is raised at the end)."""
        made, self.made = self.made, []
        steps = (
            self._drop_roles([a.credentials.user for m in made for a in m.postgres]),
            redis_users.delete(self.redis_url, [a.credentials.user for m in made for a in m.redis]),
            self._delete_broker_users({a.credentials.user for m in made for a in m.rabbitmq}),
        )
        failures = [result for result in await asyncio.gather(*steps, return_exceptions=True)
                    if isinstance(result, BaseException)]  # fmt: skip
        if failures:
            raise failures[0]

    async def _drop_roles(self, roles: list[str]) -> None:
        if not roles:
            return
        conn = await asyncpg.connect(database_url(self.postgres_url, "postgres"), timeout=10)
        try:
            for role in roles:
                owned = await conn.fetch(
                    "SELECT datname FROM pg_database WHERE pg_get_userbyid(datdba) = $1", role
                )
                for row in owned:
                    await conn.execute(
                        f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)',
                        timeout=CLEANUP_TIMEOUT_S,
                    )
                await conn.execute(f'DROP ROLE IF EXISTS "{role}"', timeout=CLEANUP_TIMEOUT_S)
        finally:
            await conn.close()

    async def _delete_broker_users(self, users: set[str]) -> None:
        for user in sorted(users):
            await self.rabbitmq.delete_user(user)
