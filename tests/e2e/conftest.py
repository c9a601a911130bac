"""Starts the platform as `make dev` does (the root Procfile under honcho), isolated per run."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
ADMIN_EMAIL = "admin@e2e.example.com"
ADMIN_PASSWORD = "admin-password-e2e"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Honcho:
    """One `honcho start` process running some lines of the root Procfile."""

    env: dict[str, str]
    processes: tuple[str, ...] = ()
    lines: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None

    def start(self) -> Honcho:
        honcho = str(Path(sys.executable).with_name("honcho"))
        self.proc = subprocess.Popen(
            [honcho, "--no-colour", "-f", str(ROOT / "Procfile"), "start", *self.processes],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._collect, daemon=True).start()
        return self

    def _collect(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


@dataclass
class Platform:
    base_url: str
    env: dict[str, str]
    honcho: Honcho


def platform_env(
    run_id: str, postgres_url: str, redis_url: str, redis_key_prefix: str, amqp_url: str
) -> dict[str, str]:
    """Every setting the Procfile's processes read, on free ports and run-scoped names."""
    ports = {
        name: free_port() for name in ("user", "product", "cart", "order", "gateway", "metrics")
    }
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "LOG_LEVEL": "INFO",
            "POSTGRES_URL": postgres_url,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": f"{redis_key_prefix}e2e:",
            "AMQP_URL": amqp_url,
            "EVENTS_EXCHANGE": f"test.{run_id}.e2e.events",
            "QUEUE_PREFIX": f"test.{run_id}.e2e.",
            "USER_GRPC_PORT": str(ports["user"]),
            "USER_METRICS_PORT": "0",
            "USER_DB_NAME": f"t_{run_id}_e2e_users",
            "PRODUCT_GRPC_PORT": str(ports["product"]),
            "PRODUCT_METRICS_PORT": "0",
            "PRODUCT_DB_NAME": f"t_{run_id}_e2e_products",
            "CART_GRPC_PORT": str(ports["cart"]),
            "CART_METRICS_PORT": "0",
            "CART_STORE": "redis",
            "ORDER_GRPC_PORT": str(ports["order"]),
            "ORDER_METRICS_PORT": "0",
            "ORDER_DB_NAME": f"t_{run_id}_e2e_orders",
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(ports["gateway"]),
            "GATEWAY_METRICS_PORT": str(ports["metrics"]),
            "USER_SERVICE_ADDR": f"127.0.0.1:{ports['user']}",
            "PRODUCT_SERVICE_ADDR": f"127.0.0.1:{ports['product']}",
            "CART_SERVICE_ADDR": f"127.0.0.1:{ports['cart']}",
            "ORDER_SERVICE_ADDR": "",
            "ADMIN_EMAIL": ADMIN_EMAIL,
            "ADMIN_PASSWORD": ADMIN_PASSWORD,
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_COST_KIB": "8192",
            "ARGON2_PARALLELISM": "1",
        }
    )
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    return env


def wait_ready(base_url: str, honcho: Honcho, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if honcho.proc is not None and honcho.proc.poll() is not None:
            tail = "\n".join(honcho.lines[-40:])
            raise AssertionError(f"honcho exited early:\n{tail}")
        # Refused connections are expected until the gateway listens.
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    tail = "\n".join(honcho.lines[-40:])
    raise AssertionError(f"platform not ready after {timeout}s:\n{tail}")


@pytest.fixture(scope="session")
async def e2e_env(
    tmp_path_factory: pytest.TempPathFactory,
    run_id: str,
    postgres_url: str,
    create_database: Callable[[str], Awaitable[str]],
    redis_url: str,
    redis_key_prefix: str,
    amqp_url: str,
) -> dict[str, str]:
    env = platform_env(run_id, postgres_url, redis_url, redis_key_prefix, amqp_url)
    # Created here (empty) so the plugin drops them at the end; the services migrate them at start.
    await create_database("e2e_users")
    await create_database("e2e_products")
    await create_database("e2e_orders")
    env["JWT_PRIVATE_KEY_FILE"] = str(tmp_path_factory.mktemp("keys") / "jwt-signing-key.pem")
    return env


@pytest.fixture(scope="session")
def platform(e2e_env: dict[str, str]) -> Iterator[Platform]:
    honcho = Honcho(e2e_env).start()
    base_url = f"http://127.0.0.1:{e2e_env['GATEWAY_PORT']}"
    try:
        wait_ready(base_url, honcho)
        yield Platform(base_url, e2e_env, honcho)
    finally:
        honcho.stop()


@dataclass(frozen=True)
class Procfile:
    """What the tests need to drive the Procfile by hand."""

    admin_email: str = ADMIN_EMAIL
    admin_password: str = ADMIN_PASSWORD

    @staticmethod
    def free_port() -> int:
        return free_port()

    @staticmethod
    def start(env: dict[str, str], *processes: str) -> Honcho:
        return Honcho(env, processes).start()

    @staticmethod
    def wait_ready(base_url: str, honcho: Honcho) -> None:
        wait_ready(base_url, honcho)


@pytest.fixture(scope="session")
def procfile() -> Procfile:
    return Procfile()
