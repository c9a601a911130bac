"""Starts the platform as `make dev` does, from the lines of the root Procfile, isolated per run.

Each Procfile line runs under its own `honcho start <line>`, so a test can stop, SIGKILL and
restart one service while the others go on (one honcho for all would stop everything when one
process dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chassis.testing.accounts import RunAccounts
from chassis.testing.plugin import AmqpIsolation
from chassis.testing.process import free_port

if TYPE_CHECKING:
    from .faults import QueueDepths, Servers

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS_FILE = ROOT / "deploy" / "accounts" / "accounts.toml"
ADMIN_EMAIL = "admin@e2e.example.com"
ADMIN_PASSWORD = "admin-password-e2e"
SERVICES = ("service-user", "service-product", "service-cart", "service-order", "service-payment")
# The simulated payment provider stands for an outside system: one process, never replicated.
PROVIDER = "payment-provider"
PROCESSES = (*SERVICES, PROVIDER, "api-gateway")
# Settings of one Procfile line (its replicas too), over the platform's: the payment step's two
# processes make few queries at once, so their pools stay small (PostgreSQL's 100 connections
# serve every platform of the run).
LINE_SETTINGS = {
    "service-payment": {"POSTGRES_POOL_MAX": "2"},
    PROVIDER: {"POSTGRES_POOL_MAX": "2"},
}
# The saga timeout of the e2e platform: short enough for the timeout scenario, long enough that
# a loaded 2-core machine never times out a healthy checkout.
SAGA_TIMEOUT_SECONDS = 12
MEMORY_GOAL_MIB = 150
# (platform, moment, process -> resident MiB), printed at the end of the run.
MEMORY_READINGS: list[tuple[str, str, dict[str, float | None]]] = []


@dataclass
class Honcho:
    """One `honcho start` process running some lines of the root Procfile."""

    env: dict[str, str]
    processes: tuple[str, ...] = ()
    lines: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    procfile: Path = ROOT / "Procfile"

    def start(self) -> Honcho:
        honcho = str(Path(sys.executable).with_name("honcho"))
        command = [honcho, "--no-colour", "-d", str(ROOT), "-f", str(self.procfile), "start"]
        self.proc = subprocess.Popen(
            [*command, *self.processes],
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

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        self.signal_stop()
        self.wait_stopped()

    def signal_stop(self) -> None:
        """SIGTERM: the service drains and exits (`wait_stopped` waits for it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the service and honcho over it: a crash, nothing drained. Honcho starts each
        process in a session of its own, so killing honcho's group alone would leave the service
        running, orphaned, still bound to its port."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in reversed(_descendants(self.proc.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def resident_mib(self) -> float | None:
        """VmRSS of the service under honcho (the largest process below it), in MiB."""
        if not self.running or self.proc is None:
            return None
        sizes = [0]
        for pid in _descendants(self.proc.pid):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        sizes.append(int(line.split()[1]))
        return max(sizes) / 1024 or None


def _descendants(pid: int) -> list[int]:
    """Every process under `pid`, parents before their children (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += [int(child), *_descendants(int(child))]
    return found


@dataclass
class Platform:
    """The running platform: one honcho per Procfile line, and the gateway's URL."""

    base_url: str
    env: dict[str, str]
    processes: dict[str, Honcho] = field(default_factory=dict)
    # Settings of one process only (a fault test points each service at proxies of its own).
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    # What processes stopped or killed before wrote.
    earlier_lines: dict[str, list[str]] = field(default_factory=dict)
    # The Procfile its processes are lines of (the replicas' tests use a generated one), and
    # the gRPC address of processes whose port is not in `env` (a replica's is in its line).
    procfile: Path = ROOT / "Procfile"
    addresses: dict[str, str] = field(default_factory=dict)
    # Process name -> the Procfile line it runs, when they differ (a second gateway).
    procfile_lines: dict[str, str] = field(default_factory=dict)

    def start(self, name: str) -> None:
        if name in self.processes:
            self.earlier_lines.setdefault(name, []).extend(self.processes[name].lines)
        line = self.procfile_lines.get(name, name)
        base_line = line.rstrip("0123456789").removesuffix("-") if line[-1:].isdigit() else line
        env = {**self.env, **LINE_SETTINGS.get(base_line, {}), **self.overrides.get(name, {})}
        self.processes[name] = Honcho(env, (line,), procfile=self.procfile).start()

    def stop(self, name: str) -> None:
        self.processes[name].stop()

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)
        self.wait_serving(name)

    def grpc_address(self, service: str) -> str:
        if service in self.addresses:
            return self.addresses[service]
        prefix = service.removeprefix("service-").upper()
        return f"127.0.0.1:{self.env[f'{prefix}_GRPC_PORT']}"

    def wait_serving(self, name: str, timeout: float = 90.0) -> None:
        if name.startswith("api-gateway"):
            port = self.overrides.get(name, self.env)["GATEWAY_PORT"]
            wait_ready(f"http://127.0.0.1:{port}", self.processes[name], timeout)
        elif name == PROVIDER:
            wait_ready(self.env["PAYMENT_PROVIDER_URL"], self.processes[name], timeout)
        else:
            wait_grpc_serving(self.grpc_address(name), self.processes[name], timeout)

    def wait_ready(self, timeout: float = 120.0) -> None:
        gateways = [name for name in self.processes if name.startswith("api-gateway")]
        for name in self.processes:
            if name not in gateways:
                self.wait_serving(name, timeout)
        for name in gateways:
            self.wait_serving(name, timeout)

    def stop_all(self) -> None:
        """Every process told to stop at once, then waited for: they drain side by side, as a
        whole deployment's pods do, instead of one drain after another."""
        for honcho in self.processes.values():
            honcho.signal_stop()
        for honcho in self.processes.values():
            honcho.wait_stopped()

    def logs(self, name: str) -> list[str]:
        return list(self.processes[name].lines)

    def record_memory(self, label: str, moment: str) -> None:
        """Each process's resident memory now, for the run's closing summary."""
        MEMORY_READINGS.append(
            (label, moment, {name: h.resident_mib() for name, h in self.processes.items()})
        )

    def save_logs(self, label: str) -> None:
        """Every process's output into E2E_LOG_DIR, when set (to read after a failure)."""
        if folder := os.environ.get("E2E_LOG_DIR"):
            Path(folder).mkdir(parents=True, exist_ok=True)
            for name, honcho in self.processes.items():
                lines = [*self.earlier_lines.get(name, []), *honcho.lines]
                (Path(folder) / f"{label}-{name}.log").write_text("\n".join(lines) + "\n")


def platform_env(
    run_id: str,
    postgres_url: str,
    redis_url: str,
    redis_key_prefix: str,
    amqp_url: str,
    isolation: AmqpIsolation,
    label: str = "e2e",
) -> dict[str, str]:
    """Every setting the Procfile's processes read, on free ports and run-scoped names."""
    ports = {
        name: free_port()
        for name in (
            "user",
            "product",
            "cart",
            "order",
            "payment",
            "provider",
            "gateway",
            "gateway_metrics",
        )
    }
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "LOG_LEVEL": "INFO",
            # The tests read the processes' lines as JSON (`make dev` sets console for people).
            "LOG_FORMAT": "json",
            # Every log line reaches honcho at once, also from a process about to be SIGKILLed.
            "PYTHONUNBUFFERED": "1",
            "POSTGRES_URL": postgres_url,
            # Platforms run side by side (one busy per xdist worker, others idle), on a server of
            # 100 connections that every suite shares. The shared platform's storms need 6 (4
            # made 200 checkouts at once queue past the gateway's deadline); a fault platform's
            # stream of 36 shoppers does with 4; the replicas' platform (two of each service)
            # with 3. With 8 for the shared platform's storms while the replicas' ran on the
            # other worker, the server refused connections (seen in CI: 503 to a burst of
            # registrations, "remaining connection slots are reserved").
            "POSTGRES_POOL_MAX": {"e2e": "6", "replicas": "3"}.get(label, "4"),
            # A burst's connections go back to the server soon after it.
            "POSTGRES_POOL_IDLE_SECONDS": "10",
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": f"{redis_key_prefix}{label}:",
            "AMQP_URL": amqp_url,
            "EVENTS_EXCHANGE": f"{isolation.queue_prefix}{label}.events",
            "QUEUE_PREFIX": f"{isolation.queue_prefix}{label}.",
            "USER_GRPC_PORT": str(ports["user"]),
            "USER_METRICS_PORT": "0",
            "USER_DB_NAME": f"t_{run_id}_{label}_users",
            "PRODUCT_GRPC_PORT": str(ports["product"]),
            "PRODUCT_METRICS_PORT": "0",
            "PRODUCT_DB_NAME": f"t_{run_id}_{label}_products",
            "CART_GRPC_PORT": str(ports["cart"]),
            "CART_METRICS_PORT": "0",
            "CART_STORE": "redis",
            "ORDER_GRPC_PORT": str(ports["order"]),
            "ORDER_METRICS_PORT": "0",
            "ORDER_DB_NAME": f"t_{run_id}_{label}_orders",
            "PAYMENT_GRPC_PORT": str(ports["payment"]),
            "PAYMENT_METRICS_PORT": "0",
            "PAYMENT_DB_NAME": f"t_{run_id}_{label}_payments",
            "PAYMENT_PROVIDER_HOST": "127.0.0.1",
            "PAYMENT_PROVIDER_PORT": str(ports["provider"]),
            "PAYMENT_PROVIDER_DB_NAME": f"t_{run_id}_{label}_payment_provider",
            "PAYMENT_PROVIDER_URL": f"http://127.0.0.1:{ports['provider']}",
            "SAGA_TIMEOUT_SECONDS": str(SAGA_TIMEOUT_SECONDS),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(ports["gateway"]),
            "GATEWAY_METRICS_PORT": str(ports["gateway_metrics"]),
            "USER_SERVICE_ADDR": f"127.0.0.1:{ports['user']}",
            "PRODUCT_SERVICE_ADDR": f"127.0.0.1:{ports['product']}",
            "CART_SERVICE_ADDR": f"127.0.0.1:{ports['cart']}",
            "ORDER_SERVICE_ADDR": f"127.0.0.1:{ports['order']}",
            "PAYMENT_SERVICE_ADDR": f"127.0.0.1:{ports['payment']}",
            "ADMIN_EMAIL": ADMIN_EMAIL,
            "ADMIN_PASSWORD": ADMIN_PASSWORD,
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_COST_KIB": "8192",
            "ARGON2_PARALLELISM": "1",
            # Every test client is 127.0.0.1: the per-client limits are specified elsewhere.
            "LOGIN_RATE_PER_CLIENT": "100000",
            "REGISTER_RATE_PER_CLIENT": "100000",
            "ARGON2_MAX_QUEUED": "200",
            "READINESS_INTERVAL_SECONDS": "1",
        }
    )
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    return env


def _exited(honcho: Honcho) -> AssertionError:
    tail = "\n".join(honcho.lines[-40:])
    return AssertionError(f"honcho {honcho.processes} exited early:\n{tail}")


def wait_ready(base_url: str, honcho: Honcho, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if honcho.proc is not None and honcho.proc.poll() is not None:
            raise _exited(honcho)
        # Refused connections are expected until the gateway listens.
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    tail = "\n".join(honcho.lines[-40:])
    raise AssertionError(f"platform not ready after {timeout}s:\n{tail}")


def wait_grpc_serving(address: str, honcho: Honcho, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if honcho.proc is not None and honcho.proc.poll() is not None:
                raise _exited(honcho)
            with contextlib.suppress(grpc.RpcError):
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.2)
    tail = "\n".join(honcho.lines[-40:])
    raise AssertionError(f"{honcho.processes} not SERVING on {address} after {timeout}s:\n{tail}")


@pytest.fixture(scope="session")
def make_env(
    tmp_path_factory: pytest.TempPathFactory,
    run_id: str,
    postgres_url: str,
    create_database: Callable[[str], Awaitable[str]],
    redis_url: str,
    redis_key_prefix: str,
    amqp_url: str,
    amqp_isolation: AmqpIsolation,
) -> Callable[[str], Awaitable[dict[str, str]]]:
    """Factory: the settings of a whole platform of its own (databases, exchange, keys)."""

    async def make(label: str) -> dict[str, str]:
        env = platform_env(
            run_id, postgres_url, redis_url, redis_key_prefix, amqp_url, amqp_isolation, label
        )
        # Created here (empty) so the plugin drops them at the end; the services migrate them.
        for name in ("users", "products", "orders", "payments", "payment_provider"):
            await create_database(f"{label}_{name}")
        env["JWT_PRIVATE_KEY_FILE"] = str(tmp_path_factory.mktemp("keys") / "jwt-signing-key.pem")
        return env

    return make


@pytest.fixture(scope="session")
async def e2e_env(
    make_env: Callable[[str], Awaitable[dict[str, str]]], service_accounts: RunAccounts
) -> dict[str, str]:
    env = await make_env("e2e")
    # Each service on accounts of its own (USER_POSTGRES_URL, ...), as `make dev` runs them:
    # the Procfile hands each line its own URLs (test_least_privilege.py).
    env.update(await service_accounts.make(ACCOUNTS_FILE, env, "e2e"))
    return env


def start_platform(
    env: dict[str, str],
    processes: tuple[str, ...] = PROCESSES,
    overrides: dict[str, dict[str, str]] | None = None,
    **layout: Any,
) -> Platform:
    """The processes started and serving; `layout` sets Platform's procfile, addresses and
    procfile_lines."""
    platform = Platform(
        f"http://127.0.0.1:{env['GATEWAY_PORT']}", env, overrides=overrides or {}, **layout
    )
    try:
        for name in processes:
            platform.start(name)
        platform.wait_ready()
    except BaseException:
        platform.stop_all()
        raise
    return platform


@pytest.fixture(scope="session")
def platform(e2e_env: dict[str, str]) -> Iterator[Platform]:
    running = start_platform(e2e_env)
    time.sleep(2)  # let the start-up work (migrations, JWKS, queue declarations) settle
    running.record_memory("e2e", "idle")
    try:
        yield running
    finally:
        running.record_memory("e2e", "after the e2e tests")
        running.stop_all()
        running.save_logs("e2e")


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


@dataclass
class FaultPlatform:
    """A platform of its own whose services reach PostgreSQL, Redis and RabbitMQ through
    proxies a test can cut (`servers`), with the depths of its queues (`queues`)."""

    platform: Platform
    servers: Servers
    queues: QueueDepths

    def ensure_running(self) -> None:
        """Whatever an earlier test left, every process up and serving."""
        for name in PROCESSES:
            if not self.platform.processes[name].running:
                self.platform.start(name)
        for name in PROCESSES:
            self.platform.wait_serving(name)


@pytest.fixture(scope="session")
async def fault_platform(
    make_env: Callable[[str], Awaitable[dict[str, str]]], service_accounts: RunAccounts
) -> AsyncIterator[FaultPlatform]:
    from .faults import QueueDepths, Servers  # faults.py imports this module

    env = await make_env("faults")
    env.update(await service_accounts.make(ACCOUNTS_FILE, env, "faults"))
    for service in ("PRODUCT", "CART", "ORDER", "PAYMENT"):
        env[f"{service}_METRICS_PORT"] = str(free_port())
    queues = QueueDepths.of(env)
    with Servers(env) as servers:
        platform = await asyncio.to_thread(start_platform, env, PROCESSES, servers.overrides())
        await asyncio.sleep(2)
        platform.record_memory("faults", "idle")
        try:
            yield FaultPlatform(platform, servers, queues)
        finally:
            platform.record_memory(
                "faults", "after the fault tests (restarted ones: since restart)"
            )
            platform.stop_all()
            platform.save_logs("faults")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under xdist, a worker hands its memory readings to the controller, which prints them."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["memory_readings"] = json.dumps(MEMORY_READINGS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    readings = getattr(node, "workeroutput", {}).get("memory_readings")
    for label, moment, sizes in json.loads(readings or "[]"):
        MEMORY_READINGS.append((label, moment, sizes))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each service's resident memory at idle and after the runs (goal: at most 150 MiB)."""
    if not MEMORY_READINGS:
        return
    terminalreporter.section(f"resident memory per process, MiB (goal <= {MEMORY_GOAL_MIB})")
    width = max(len(name) for name in PROCESSES)
    for label, moment, sizes in MEMORY_READINGS:
        figures = "  ".join(
            f"{name:>{width}} {'-' if size is None else f'{size:6.1f}'}"
            + (" OVER" if size is not None and size > MEMORY_GOAL_MIB else "")
            for name, size in sizes.items()
        )
        terminalreporter.write_line(f"{label} platform, {moment}:")
        terminalreporter.write_line(f"  {figures}")


@dataclass
class Storefront:
    """The web storefront (its Procfile line) in front of the shared platform's gateway."""

    url: str
    honcho: Honcho
    platform: Platform


@pytest.fixture(scope="session")
def storefront(platform: Platform) -> Iterator[Storefront]:
    port = free_port()
    env = {
        **platform.env,
        "STOREFRONT_HOST": "127.0.0.1",
        "STOREFRONT_PORT": str(port),
        "STOREFRONT_METRICS_PORT": str(free_port()),
        "GATEWAY_URL": platform.base_url,
    }
    honcho = Honcho(env, ("web-storefront",)).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, honcho)
        yield Storefront(url, honcho, platform)
    finally:
        honcho.stop()
        if folder := os.environ.get("E2E_LOG_DIR"):
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "e2e-web-storefront.log").write_text("\n".join(honcho.lines) + "\n")
