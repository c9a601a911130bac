"""Least privilege in the compose environment: every service logs in with an account of its own,
platform-bootstrap makes exactly those accounts from deploy/accounts/accounts.toml, and Redis
(redis/start-redis.sh, run here on a private port) keeps the services' users across a restart."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import redis.asyncio as redis
from redis.exceptions import AuthenticationError, ResponseError

from chassis.accounts import BootstrapSettings, load_plan, redis_users, resolve_accounts
from chassis.accounts.plan import Credentials, RedisAccount
from chassis.settings import AmqpSettings

from .conftest import ROOT
from .test_service_settings import container_environment, env_file

STORE_URLS = {"POSTGRES_URL": "postgres", "REDIS_URL": "redis", "AMQP_URL": "rabbitmq"}
# Users of the stores themselves: never a service's (compose's defaults of .env.example).
ADMINISTRATORS = {"postgres", "default", "ecommerce", "guest"}


def logins(environment: dict[str, str]) -> set[tuple[str, str, str]]:
    """(store, user, password) of every store URL in a container's environment."""
    found = set()
    for variable, store in STORE_URLS.items():
        parts = urlsplit(environment.get(variable, ""))
        if parts.username:
            found.add((store, unquote(parts.username), unquote(parts.password or "")))
    return found


@pytest.fixture(params=["defaults", ".env.example"])
def values(request: pytest.FixtureRequest, environment_dir: Path) -> dict[str, str]:
    return env_file(environment_dir / ".env.example") if request.param == ".env.example" else {}


def test_each_service_logs_in_with_accounts_of_its_own_and_no_administrators(
    services: dict[str, dict[str, Any]], built_services: dict[str, str], values: dict[str, str]
) -> None:
    owners: dict[tuple[str, str], str] = {}
    for name in built_services:
        environment = container_environment(services[name], values)
        for store, user, _ in logins(environment):
            assert user not in ADMINISTRATORS, f"{name} logs in to {store} as {user}"
            assert owners.setdefault((store, user), name) == name, f"{name} shares {user}"
        assert not any(
            variable in environment for variable in ("POSTGRES_PASSWORD", "RABBITMQ_PASSWORD")
        )
    # The seed job is service-product, with its accounts.
    seed = container_environment(services["product-seed"], values)
    product = container_environment(services["service-product"], values)
    assert logins(seed) == logins(product)


def test_the_bootstrap_makes_exactly_the_accounts_the_services_log_in_with(
    services: dict[str, dict[str, Any]],
    built_services: dict[str, str],
    values: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = services["platform-bootstrap"]
    environment = container_environment(job, values)
    [mount] = job["volumes"]
    source, target = mount.split(":")[:2]
    assert environment["ACCOUNTS_FILE"].startswith(target + "/")
    accounts_file = (ROOT / "docker-compose-environment" / source).resolve() / Path(
        environment["ACCOUNTS_FILE"]
    ).relative_to(target)
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings, amqp = BootstrapSettings(), AmqpSettings()
    accounts = resolve_accounts(load_plan(accounts_file), environment, settings, amqp)
    made = {
        *(("postgres", a.credentials.user, a.credentials.password) for a in accounts.postgres),
        *(("redis", a.credentials.user, a.credentials.password) for a in accounts.redis),
        *(("rabbitmq", a.credentials.user, a.credentials.password) for a in accounts.rabbitmq),
    }
    used = set().union(
        *(logins(container_environment(services[name], values)) for name in built_services)
    )
    assert made == used
    databases = {a.credentials.user: a.database for a in accounts.postgres}
    prefixes = {access.service: access.variables for access in load_plan(accounts_file)}
    for name in built_services:
        service_env = container_environment(services[name], values)
        for store, user, _ in logins(service_env):
            if store == "postgres":
                prefix = prefixes[name]
                assert databases[user] == service_env[f"{prefix}_DB_NAME"], name
    assert urlsplit(settings.rabbitmq_admin_url).hostname == "rabbitmq"


# ---------------------------------------------------------------- Redis keeps its users


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """redis-server started by start-redis.sh on a port and a folder of this test's own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, password: str) -> None:
        script = ROOT / "docker-compose-environment" / "redis" / "start-redis.sh"
        env = {
            "PATH": os.environ["PATH"],
            "REDIS_PASSWORD": password,
            "REDIS_ACL_FILE": str(self.folder / "users.acl"),
        }
        self.process = subprocess.Popen(
            ["sh", str(script), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.folder), "--save", "", "--appendonly", "no"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)

    def url(self, user: str = "", password: str = "") -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None or shutil.which("sha256sum") is None:
        pytest.skip("no redis-server here to run start-redis.sh with")
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


async def _ping(url: str) -> None:
    client = redis.from_url(url, driver_info=None, socket_timeout=5)
    try:
        await client.ping()
    finally:
        await client.aclose()


def test_redis_keeps_the_services_users_and_follows_the_administrators_password(
    private_redis: PrivateRedis,
) -> None:
    private_redis.start("first-admin-password")
    account = RedisAccount(
        "service-user",
        Credentials.from_url(private_redis.url("service-user", "its-own"), "USER_REDIS_URL"),
        "user:",
        ("get",),
    )
    asyncio.run(redis_users.apply(private_redis.url("", "first-admin-password"), (account,)))
    assert "first-admin-password" not in (private_redis.folder / "users.acl").read_text()

    private_redis.stop()
    private_redis.start("second-admin-password")  # a restart, with a rotated admin password
    asyncio.run(_ping(private_redis.url("service-user", "its-own")))
    asyncio.run(_ping(private_redis.url("", "second-admin-password")))
    with pytest.raises((AuthenticationError, ResponseError)):
        asyncio.run(_ping(private_redis.url("", "first-admin-password")))
    with pytest.raises((AuthenticationError, ResponseError)):
        asyncio.run(_ping(f"redis://127.0.0.1:{private_redis.port}/0"))  # no password: refused
