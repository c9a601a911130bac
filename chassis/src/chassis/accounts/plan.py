"""The accounts plan: what each service may reach (its database, its Redis keys and commands, its
broker queue), read from the platform's accounts file, and the concrete accounts of a deployment
made from it with the credentials each service is given (the user name and password in its URLs).
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from chassis.messaging import topology
from chassis.messaging.declaration import bindings_of
from chassis.settings import AmqpSettings

STORES = ("postgres", "redis", "rabbitmq")
# The store's URL variable of a service, after the service's own prefix (USER_POSTGRES_URL).
URL_VARIABLES = {"postgres": "POSTGRES_URL", "redis": "REDIS_URL", "rabbitmq": "AMQP_URL"}
# The platform's event catalogue: the generated module of the `.proto` whose events name their
# consumers (`consumers` in each event's option); `EVENTS_CATALOGUE` names another.
EVENTS_CATALOGUE = "ecommerce.events.v1.events_pb2"
# Glob characters of a Redis key pattern, escaped in a key prefix.
_GLOB = re.compile(r"([*?\[\]\\])")


class PlanError(ValueError):
    """The accounts file, or the credentials a deployment gives, cannot make safe accounts."""


@dataclass(frozen=True)
class ServiceAccess:
    """One service's entry in the accounts file."""

    service: str
    variables: str
    database: str | None = None
    redis_keys: str | None = None
    redis_commands: tuple[str, ...] = ()
    redis_optional: bool = False
    queue: str | None = None
    # The routing keys the queue is bound to (the events whose proto option names the service a
    # consumer): declared by the bootstrap before any service starts, so no event finds a
    # consumer's queue missing.
    events: tuple[str, ...] = ()

    def stores(self) -> tuple[str, ...]:
        wanted = {
            "postgres": self.database is not None,
            "redis": self.redis_keys is not None,
            "rabbitmq": self.queue is not None,
        }
        return tuple(store for store in STORES if wanted[store])

    def url_variable(self, store: str) -> str:
        return f"{self.variables}_{URL_VARIABLES[store]}"


def load_plan(
    path: Path, bindings: Mapping[str, Sequence[str]] | None = None
) -> list[ServiceAccess]:
    """The services of the accounts file at `path`, in its order, each queue bound to the routing
    keys `bindings` gives its service (`catalogue_bindings()`: what the event catalogue declares).
    A service the bindings name that is not in the file is left out (a file may list some of the
    platform's services); one in the file without a queue is an error."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise PlanError(f"cannot read the accounts file {path}: {error}") from error
    plan = [_service_access(name, entry) for name, entry in document.items()]
    bound = bindings or {}
    for i, access in enumerate(plan):
        events = tuple(bound.get(access.service, ()))
        if events and access.queue is None:
            raise PlanError(
                f"{access.service}: the event catalogue names it a consumer of {list(events)},"
                " but it has no rabbitmq.queue"
            )
        plan[i] = replace(access, events=events)
    return plan


def catalogue_bindings(module: str = EVENTS_CATALOGUE) -> dict[str, tuple[str, ...]]:
    """Service -> the routing keys its queue is bound to, from the events of the generated
    module `module` (each event's option names its `consumers`)."""
    try:
        catalogue = importlib.import_module(module)
    except ImportError as error:
        raise PlanError(f"cannot import the event catalogue {module!r}: {error}") from error
    return bindings_of(catalogue)


def _service_access(name: str, entry: Any) -> ServiceAccess:
    if not isinstance(entry, dict) or not isinstance(entry.get("variables"), str):
        raise PlanError(f"{name}: a table with `variables` (the prefix of its settings)")
    known = {"variables", "postgres", "redis", "rabbitmq"}
    if unknown := set(entry) - known:
        raise PlanError(f"{name}: unknown keys {sorted(unknown)}")
    postgres, redis, rabbitmq = (entry.get(key, {}) for key in ("postgres", "redis", "rabbitmq"))
    commands = redis.get("commands", [])
    if not all(isinstance(command, str) and command for command in commands):
        raise PlanError(f"{name}: redis.commands is a list of command names")
    if redis and not isinstance(redis.get("keys"), str):
        raise PlanError(f"{name}: redis.keys is the prefix of the service's keys")
    if "events" in rabbitmq:
        raise PlanError(
            f"{name}: rabbitmq.events is no longer read: an event names its consumers in its"
            " proto option (`consumers`), and the bootstrap binds their queues from that"
        )
    return ServiceAccess(
        service=name,
        variables=entry["variables"],
        database=postgres.get("database"),
        redis_keys=redis.get("keys"),
        redis_commands=tuple(command.lower() for command in commands),
        redis_optional=bool(redis.get("optional", False)),
        queue=rabbitmq.get("queue"),
    )


@dataclass(frozen=True)
class Credentials:
    """The user name and password in a service's URL, and the URL itself (to log in with)."""

    user: str
    password: str
    url: str

    @classmethod
    def from_url(cls, url: str, variable: str) -> Credentials:
        parts = urlsplit(url)
        if not parts.username or not parts.password:
            raise PlanError(f"{variable} names no user and password of its own")
        return cls(unquote(parts.username), unquote(parts.password), url)

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r})"  # never the password


@dataclass(frozen=True)
class PostgresAccount:
    """A role that owns `database` and may do nothing else."""

    service: str
    credentials: Credentials
    database: str


@dataclass(frozen=True)
class RedisAccount:
    """An ACL user confined to the keys under `key_prefix`, with `commands` only."""

    service: str
    credentials: Credentials
    key_prefix: str
    commands: tuple[str, ...]

    @property
    def key_pattern(self) -> str:
        return _GLOB.sub(r"\\\1", self.key_prefix) + "*"


@dataclass(frozen=True)
class RabbitmqAccount:
    """A broker user that may configure, write and read `resources` (exact names) in `vhost`;
    its queue (`queue`, in `settings`' names) is bound to `events` (routing keys)."""

    service: str
    credentials: Credentials
    vhost: str
    resources: tuple[str, ...]
    queue: str = ""
    events: tuple[str, ...] = ()
    settings: AmqpSettings | None = field(default=None, compare=False, repr=False)

    @property
    def permission(self) -> str:
        """The regular expression of the user's configure, write and read permissions."""
        return "^(" + "|".join(re.escape(name) for name in self.resources) + ")$"


@dataclass(frozen=True)
class Accounts:
    postgres: tuple[PostgresAccount, ...]
    redis: tuple[RedisAccount, ...]
    rabbitmq: tuple[RabbitmqAccount, ...]


def vhost_of(amqp_url: str) -> str:
    """The virtual host an AMQP URL names (`/` for an empty path, as the clients read it)."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def resolve(
    plan: list[ServiceAccess],
    environ: Mapping[str, str],
    *,
    redis_key_prefix: str,
    amqp: AmqpSettings,
    admins: Mapping[str, str | None],
) -> Accounts:
    """The accounts of a deployment: each service's credentials from its URL variables, its
    database from `<variables>_DB_NAME` (else the plan's), its keys under `redis_key_prefix`, its
    broker names from `amqp` (EVENTS_EXCHANGE, QUEUE_PREFIX). `admins` are the administrators'
    user names per store, which no service account may be."""
    missing: list[str] = []
    postgres: list[PostgresAccount] = []
    redis: list[RedisAccount] = []
    rabbitmq: list[RabbitmqAccount] = []
    for access in plan:
        for store in access.stores():
            variable = access.url_variable(store)
            url = environ.get(variable, "")
            if not url:
                if not (store == "redis" and access.redis_optional):
                    missing.append(variable)
                continue
            credentials = Credentials.from_url(url, variable)
            if store == "postgres":
                database = environ.get(f"{access.variables}_DB_NAME") or access.database
                assert database is not None
                postgres.append(PostgresAccount(access.service, credentials, database))
            elif store == "redis":
                assert access.redis_keys is not None
                redis.append(
                    RedisAccount(
                        access.service,
                        credentials,
                        redis_key_prefix + access.redis_keys,
                        access.redis_commands,
                    )
                )
            else:
                assert access.queue is not None
                rabbitmq.append(
                    RabbitmqAccount(
                        access.service,
                        credentials,
                        vhost_of(url),
                        topology.service_resources(amqp, access.queue),
                        queue=access.queue,
                        events=access.events,
                        settings=amqp.model_copy(update={"amqp_url": url}),
                    )
                )
    if missing:
        raise PlanError(f"no credentials given: {', '.join(missing)}")
    accounts = Accounts(tuple(postgres), tuple(redis), tuple(rabbitmq))
    _refuse_shared_or_privileged(accounts, admins)
    return accounts


# Users a store has whatever is configured: never turned into a service's account.
_BUILT_IN = {"postgres": {"postgres"}, "redis": {"default"}, "rabbitmq": {"guest"}}


def _refuse_shared_or_privileged(accounts: Accounts, admins: Mapping[str, str | None]) -> None:
    for store, entries in (
        ("postgres", accounts.postgres),
        ("redis", accounts.redis),
        ("rabbitmq", accounts.rabbitmq),
    ):
        reserved = _BUILT_IN[store] | {name for name in (admins.get(store),) if name}
        seen: dict[str, str] = {}
        for account in entries:
            user = account.credentials.user
            if user in reserved:
                raise PlanError(
                    f"{account.service}'s {store} user is {user!r}, an administrator: "
                    "each service needs a user of its own"
                )
            if user in seen:
                raise PlanError(
                    f"{seen[user]} and {account.service} share the {store} user {user!r}"
                )
            seen[user] = account.service
