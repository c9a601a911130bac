"""Specs of the accounts of least privilege (`chassis.accounts`, `platform-bootstrap`) on the real
servers: what each store lets a service's account do and refuses, that the bootstrap can run
again at any time, hands over a database made before it, and refuses to make a service an
administrator. Every account is named after the run and removed at the end (`service_accounts`)."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from unittest.mock import Mock

import aio_pika
import asyncpg
import pytest
import redis.asyncio as redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from chassis.accounts import (
    PlanError,
    RabbitmqAdmin,
    bootstrap,
    catalogue_bindings,
    load_plan,
    resolve,
)
from chassis.accounts.bootstrap import read_env_file
from chassis.accounts.postgres_roles import scram_sha_256
from chassis.postgres import database_url, migrate
from chassis.settings import AmqpSettings
from chassis.testing.accounts import RunAccounts, with_user
from chassis.testing.plugin import AmqpIsolation

SAMPLE_MIGRATIONS = Path(__file__).with_name("sample_migrations")
TWO_SERVICES = """
[service-alpha]
variables = "ALPHA"
postgres.database = "alpha"
redis.keys = "alpha:"
redis.commands = ["get", "set"]
rabbitmq.queue = "service-alpha"

[service-beta]
variables = "BETA"
postgres.database = "beta"
redis.keys = "beta:"
redis.commands = ["get", "set"]
"""


@pytest.fixture
def accounts_file(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(TWO_SERVICES)
    return path


@pytest.fixture
def platform_env(
    run_id: str, redis_key_prefix: str, amqp_isolation: AmqpIsolation
) -> dict[str, str]:
    """The names of a two-service platform of this test's own."""
    label = uuid.uuid4().hex[:6]
    return {
        "ALPHA_DB_NAME": f"t_{run_id}_{label}_alpha",
        "BETA_DB_NAME": f"t_{run_id}_{label}_beta",
        "REDIS_KEY_PREFIX": f"{redis_key_prefix}{label}:",
        "EVENTS_EXCHANGE": f"test.{run_id}.{label}.events",
        "QUEUE_PREFIX": f"test.{run_id}.{label}.",
        "LABEL": label,
    }


Made = tuple[dict[str, str], dict[str, str]]


@pytest.fixture
async def made(
    service_accounts: RunAccounts, accounts_file: Path, platform_env: dict[str, str]
) -> Made:
    """(the platform's names, each service's URL variables) after the bootstrap ran."""
    urls = await service_accounts.make(accounts_file, platform_env, platform_env["LABEL"])
    return platform_env, urls


async def refused(call: Callable[[], Awaitable[object]], *errors: type[BaseException]) -> str:
    with pytest.raises(errors) as caught:
        await call()
    return str(caught.value)


# ---------------------------------------------------------------------------------- PostgreSQL


async def test_a_role_owns_its_database_migrates_it_and_opens_no_other(made: Made) -> None:
    env, urls = made
    alpha_db = database_url(urls["ALPHA_POSTGRES_URL"], env["ALPHA_DB_NAME"])
    await migrate(alpha_db, SAMPLE_MIGRATIONS)
    conn = await asyncpg.connect(alpha_db, timeout=10)
    try:
        assert await conn.fetchval("SELECT count(*) FROM ledger") == 2
        assert not await conn.fetchval("SELECT rolsuper OR rolcreatedb FROM pg_roles "
                                       "WHERE rolname = current_user")  # fmt: skip
        await refused(
            lambda: conn.execute('CREATE DATABASE "t_never_made"'),
            asyncpg.InsufficientPrivilegeError,
        )
        await refused(
            lambda: conn.execute('CREATE ROLE "t_never_made"'), asyncpg.InsufficientPrivilegeError
        )
    finally:
        await conn.close()
    beta_db = database_url(urls["ALPHA_POSTGRES_URL"], env["BETA_DB_NAME"])
    message = await refused(
        lambda: asyncpg.connect(beta_db, timeout=10), asyncpg.InsufficientPrivilegeError
    )
    assert "permission denied for database" in message


async def test_the_verifier_sent_for_a_password_is_the_one_postgresql_makes(
    postgres_url: str, run_id: str
) -> None:
    role = f"t_{run_id}_scram"
    admin = await asyncpg.connect(database_url(postgres_url, "postgres"), timeout=10)
    try:
        await admin.execute(f"CREATE ROLE \"{role}\" PASSWORD 'pencil'")
        await admin.execute("SET password_encryption = 'scram-sha-256'")
        await admin.execute(f"ALTER ROLE \"{role}\" PASSWORD 'correct horse'")
        stored = await admin.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
    salt = base64.b64decode(stored.split("$")[1].split(":")[1])
    assert scram_sha_256("correct horse", salt=salt) == stored


async def test_a_database_made_before_least_privilege_is_handed_over_with_what_is_in_it(
    postgres_url: str,
    service_accounts: RunAccounts,
    accounts_file: Path,
    platform_env: dict[str, str],
) -> None:
    database = platform_env["ALPHA_DB_NAME"]
    admin = await asyncpg.connect(database_url(postgres_url, "postgres"), timeout=10)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    # What a service migrated as the superuser leaves behind.
    legacy = await asyncpg.connect(database_url(postgres_url, database), timeout=10)
    await legacy.execute(
        """
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE TYPE status AS ENUM ('PENDING');
        CREATE TABLE items (id bigserial PRIMARY KEY, name text, state status);
        CREATE VIEW item_names AS SELECT name FROM items;
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
        CREATE TRIGGER touch BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION touch();
        INSERT INTO items (name, state) VALUES ('kept', 'PENDING');
        """
    )
    await legacy.close()

    urls = await service_accounts.make(accounts_file, platform_env, platform_env["LABEL"])

    conn = await asyncpg.connect(database_url(urls["ALPHA_POSTGRES_URL"], database), timeout=10)
    try:
        await conn.execute(
            """
            ALTER TYPE status ADD VALUE 'CONFIRMED';
            ALTER TABLE items ADD COLUMN price integer;
            CREATE OR REPLACE VIEW item_names AS SELECT name, price FROM items;
            CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN NEW.price := coalesce(NEW.price, 0); RETURN NEW; END $$;
            INSERT INTO items (name) VALUES ('new');
            """
        )
        assert await conn.fetchval("SELECT count(*) FROM items WHERE price IS NOT NULL") == 1
        assert await conn.fetchval("SELECT similarity('kept', 'kept')") == 1.0
    finally:
        await conn.close()


async def test_a_role_with_more_than_login_is_refused(
    postgres_url: str,
    service_accounts: RunAccounts,
    accounts_file: Path,
    platform_env: dict[str, str],
    run_id: str,
) -> None:
    role = f"t_{run_id}_{platform_env['LABEL']}_service_alpha"
    admin = await asyncpg.connect(database_url(postgres_url, "postgres"), timeout=10)
    await admin.execute(f'CREATE ROLE "{role}" LOGIN CREATEDB')
    try:
        message = await refused(
            lambda: service_accounts.make(accounts_file, platform_env, platform_env["LABEL"]),
            PlanError,
        )
        assert "createdb" in message
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


# ---------------------------------------------------------------------------------- Redis


async def test_a_redis_user_reaches_its_own_keys_and_commands_only(made: Made) -> None:
    env, urls = made
    prefix = env["REDIS_KEY_PREFIX"]
    alpha = redis.from_url(urls["ALPHA_REDIS_URL"], driver_info=None)
    try:
        await alpha.set(f"{prefix}alpha:1", "mine")
        assert await alpha.get(f"{prefix}alpha:1") == b"mine"
        for key in (f"{prefix}beta:1", f"{prefix}other", "unprefixed"):
            await refused(lambda key=key: alpha.get(key), NoPermissionError)
            await refused(lambda key=key: alpha.set(key, "x"), NoPermissionError)
        await refused(lambda: alpha.delete(f"{prefix}alpha:1"), NoPermissionError)  # not granted
        await refused(lambda: alpha.keys("*"), NoPermissionError)
        await refused(lambda: alpha.flushall(), NoPermissionError)
        await refused(lambda: alpha.config_get("*"), NoPermissionError)
        await refused(lambda: alpha.acl_list(), NoPermissionError)
    finally:
        await alpha.aclose()


async def test_a_second_bootstrap_changes_nothing_but_a_new_password(
    service_accounts: RunAccounts, made: Made, accounts_file: Path, redis_url: str
) -> None:
    env, urls = made
    user = f"t_{service_accounts.run_id}_{env['LABEL']}_service_alpha"
    rotated = {**urls, "ALPHA_REDIS_URL": with_user(redis_url, user, "rotated-password")}
    plan = load_plan(accounts_file)
    amqp = AmqpSettings.model_validate(
        {"events_exchange": env["EVENTS_EXCHANGE"], "queue_prefix": env["QUEUE_PREFIX"]}
    )
    for variables in (urls, urls, rotated):  # twice the same, then a rotated password
        accounts = resolve(
            plan, {**env, **variables}, redis_key_prefix=env["REDIS_KEY_PREFIX"], amqp=amqp,
            admins={},
        )  # fmt: skip
        await bootstrap(
            accounts,
            postgres_admin_url=service_accounts.postgres_url,
            redis_admin_url=service_accounts.redis_url,
            rabbitmq=service_accounts.rabbitmq,
        )
    old = redis.from_url(urls["ALPHA_REDIS_URL"], driver_info=None)
    try:
        await refused(old.ping, AuthenticationError, ResponseError)
    finally:
        await old.aclose()
    new = redis.from_url(rotated["ALPHA_REDIS_URL"], driver_info=None)
    try:
        await new.set(f"{env['REDIS_KEY_PREFIX']}alpha:rotated", "1")
    finally:
        await new.aclose()


# ---------------------------------------------------------------------------------- RabbitMQ


async def test_a_broker_user_opens_its_vhost_with_its_password_only(made: Made) -> None:
    _, urls = made
    connection = await aio_pika.connect(urls["ALPHA_AMQP_URL"], timeout=10)
    await connection.close()
    wrong = urls["ALPHA_AMQP_URL"].replace("@", "x@", 1)  # another password
    await refused(lambda: aio_pika.connect(wrong, timeout=10), aio_pika.exceptions.AMQPError)


# ---------------------------------------------------------------------------------- the plan


def resolve_two(environ: dict[str, str], accounts_file: Path) -> object:
    return resolve(
        load_plan(accounts_file),
        environ,
        redis_key_prefix="",
        amqp=AmqpSettings.model_validate({}),
        admins={"postgres": "admin"},
    )


def test_every_account_needs_credentials_of_its_own(accounts_file: Path) -> None:
    full = {
        "ALPHA_POSTGRES_URL": "postgresql://alpha:pw@db:5432",
        "ALPHA_REDIS_URL": "redis://alpha:pw@cache:6379/0",
        "ALPHA_AMQP_URL": "amqp://alpha:pw@broker:5672/",
        "BETA_POSTGRES_URL": "postgresql://beta:pw@db:5432",
        "BETA_REDIS_URL": "redis://beta:pw@cache:6379/0",
    }
    resolve_two(full, accounts_file)
    with pytest.raises(PlanError, match="BETA_REDIS_URL"):
        resolve_two({k: v for k, v in full.items() if k != "BETA_REDIS_URL"}, accounts_file)
    with pytest.raises(PlanError, match="an administrator"):
        resolve_two({**full, "BETA_POSTGRES_URL": "postgresql://admin:pw@db:5432"}, accounts_file)
    with pytest.raises(PlanError, match="an administrator"):
        resolve_two({**full, "BETA_REDIS_URL": "redis://default:pw@cache:6379/0"}, accounts_file)
    with pytest.raises(PlanError, match="share the postgres user"):
        resolve_two({**full, "BETA_POSTGRES_URL": "postgresql://alpha:pw@db:5432"}, accounts_file)
    with pytest.raises(PlanError, match="no user and password"):
        resolve_two({**full, "ALPHA_AMQP_URL": "amqp://broker:5672/"}, accounts_file)


def test_the_platform_accounts_file_names_every_store_service(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    plan = {access.service: access for access in load_plan(root / "deploy/accounts/accounts.toml")}
    assert {name: access.stores() for name, access in plan.items()} == {
        "service-user": ("postgres", "redis"),
        "service-product": ("postgres", "redis", "rabbitmq"),
        "service-cart": ("redis", "rabbitmq"),
        "service-order": ("postgres", "rabbitmq"),
        "service-payment": ("postgres", "rabbitmq"),
        "payment-provider": ("postgres",),
        "web-storefront": ("redis",),
    }


def test_each_queue_is_bound_to_exactly_its_services_subscriptions() -> None:
    """The declared topology (each event's `consumers`, whose queues the bootstrap binds before any
    service starts) and each service's own subscriptions (`Subscription.of` lines, which its
    consumer binds) are one list: an event a service subscribes to without being named its
    consumer in the proto (or the other way) fails here, not as an event a late consumer missed
    on a fresh install."""
    from cart_service.handlers import subscriptions as cart
    from order_service.handlers import subscriptions as order
    from payment_service.handlers import subscriptions as payment
    from product_service.handlers import subscriptions as product

    # The handlers' collaborators are not called to list the subscriptions: any object serves.
    anything = Mock()
    subscribed = {
        "service-product": product(anything, anything),
        "service-cart": cart(anything),
        "service-order": order(anything, anything),
        "service-payment": payment(anything, anything),
    }
    bindings = catalogue_bindings()
    assert {name: sorted(keys) for name, keys in bindings.items()} == {
        name: sorted(s.routing_key for s in subscriptions)
        for name, subscriptions in subscribed.items()
    }
    root = Path(__file__).resolve().parents[2]
    for path in ("deploy/accounts/accounts.toml", "deploy/kubernetes/overlays/local/accounts.toml"):
        declared = {a.service: a.events for a in load_plan(root / path, bindings) if a.queue}
        # Every consumer the catalogue names has a queue in the file, bound to its events.
        assert declared == bindings, path


def test_a_consumer_without_a_queue_and_the_old_events_key_are_refused(tmp_path: Path) -> None:
    accounts_file = tmp_path / "accounts.toml"
    accounts_file.write_text('[alpha]\nvariables = "ALPHA"\npostgres.database = "alpha"\n')
    with pytest.raises(PlanError, match="alpha: the event catalogue names it a consumer"):
        load_plan(accounts_file, {"alpha": ("order.created",)})
    assert load_plan(accounts_file, {"beta": ("order.created",)})[0].events == ()
    accounts_file.write_text(
        '[alpha]\nvariables = "ALPHA"\nrabbitmq.queue = "alpha"\n'
        'rabbitmq.events = ["order.created"]\n'
    )
    with pytest.raises(PlanError, match=r"rabbitmq\.events is no longer read"):
        load_plan(accounts_file)


# ---------------------------------------------------------------------------------- the command


GAMMA_CATALOGUE = """
from google.protobuf import descriptor_pb2, descriptor_pool, timestamp_pb2
from ecommerce.events.v1 import options_pb2

proto = descriptor_pb2.FileDescriptorProto(
    name="gamma/events.proto", package="gamma", syntax="proto3",
    dependency=["google/protobuf/timestamp.proto", "ecommerce/events/v1/options.proto"],
)
message = proto.message_type.add(name="GammaHappened")
for number, name in enumerate(["event_id", "order_id"], start=1):
    message.field.add(name=name, number=number, type=9, label=1)  # string
message.field.add(
    name="occurred_at", number=3, type=11, label=1, type_name=".google.protobuf.Timestamp"
)
option = message.options.Extensions[options_pb2.event]
option.routing_key, option.correlation_field = "gamma.happened", "order_id"
option.consumers.append("SERVICE")
assert timestamp_pb2
DESCRIPTOR = descriptor_pool.Default().Add(proto)
"""


@pytest.mark.slow
async def test_the_command_makes_development_credentials_once_and_can_run_again(
    tmp_path: Path,
    service_accounts: RunAccounts,
    platform_env: dict[str, str],
    postgres_url: str,
    redis_url: str,
    amqp_url: str,
    run_id: str,
) -> None:
    service = f"t-{run_id}-{platform_env['LABEL']}-gamma"
    accounts_file = tmp_path / "accounts.toml"
    accounts_file.write_text(
        f'["{service}"]\nvariables = "GAMMA"\npostgres.database = "{service}"\n'
        'redis.keys = "gamma:"\nredis.commands = ["get"]\nrabbitmq.queue = "gamma"\n'
    )
    # Gamma's event catalogue: one event, `gamma.happened`, that names gamma its consumer.
    (tmp_path / "gamma_events.py").write_text(GAMMA_CATALOGUE.replace("SERVICE", service))
    credentials = tmp_path / "var" / "dev-accounts.env"
    env = {
        **os.environ,
        "POSTGRES_URL": postgres_url,
        "REDIS_URL": redis_url,
        "AMQP_URL": amqp_url,
        "RABBITMQ_ADMIN_URL": os.environ.get("RABBITMQ_ADMIN_URL", "rabbitmqctl"),
        "ACCOUNTS_FILE": str(accounts_file),
        "EVENTS_CATALOGUE": "gamma_events",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        **{k: v for k, v in platform_env.items() if k != "LABEL"},
    }

    async def run() -> str:
        # The console script people run (`-m chassis.accounts.bootstrap` warns: the package
        # imports the module first).
        command = [str(Path(sys.executable).parent / "platform-bootstrap")]
        process = await asyncio.create_subprocess_exec(
            *command, "--dev-credentials", str(credentials),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, err.decode()
        return out.decode()

    try:
        first = await run()
        # The declared topology: gamma's queue exists and is bound before gamma ever started,
        # so an event published now waits there for it.
        async with await aio_pika.connect(amqp_url, timeout=10) as connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(platform_env["EVENTS_EXCHANGE"])
            await exchange.publish(aio_pika.Message(b"event"), routing_key="gamma.happened")
            queue = await channel.declare_queue(
                f"{platform_env['QUEUE_PREFIX']}gamma", passive=True
            )
            assert queue.declaration_result.message_count == 1
        made_once = read_env_file(credentials)
        assert set(made_once) == {"GAMMA_POSTGRES_URL", "GAMMA_REDIS_URL", "GAMMA_AMQP_URL"}
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert "dev_credentials_made" in first
        second = await run()
        assert read_env_file(credentials) == made_once
        assert "dev_credentials_made" not in second
        assert "bootstrap_done" in second
        for secret in made_once.values():
            password = secret.split("@")[0].rsplit(":", 1)[1]
            assert password not in first + second, "a password reached the log"
    finally:
        # Removed with the run's other accounts.
        made = resolve(
            load_plan(accounts_file),
            {**env, **read_env_file(credentials)},
            redis_key_prefix="",
            amqp=AmqpSettings.model_validate({}),
            admins={},
        )
        service_accounts.made.append(made)


def test_rabbitmq_admin_is_the_management_api_or_rabbitmqctl() -> None:
    assert RabbitmqAdmin("http://admin:pw@broker:15672").admin_user == "admin"
    assert RabbitmqAdmin("rabbitmqctl").admin_user is None
    with pytest.raises(PlanError, match="RABBITMQ_ADMIN_URL"):
        RabbitmqAdmin("amqp://guest:guest@broker:5672/")
