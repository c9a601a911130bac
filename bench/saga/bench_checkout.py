"""Checkout saga benchmark: sustained checkouts per second that reach CONFIRMED, next to the
floor (what a checkout costs the infrastructure alone), with latency, failures and the CPU of
every process per checkout, all taken from one steady-state window per scenario.

Runs the floor (`floor.py`), then starts the seven processes of the root Procfile (honcho, one per
line) against POSTGRES_URL / REDIS_URL / AMQP_URL (localhost defaults), in databases
`bench_<id>_*`, a Redis prefix and an exchange of its own, all removed at the end, then runs the
floor again (the ratio's ceiling is the mean of both floor runs). Prints Markdown tables, asserts
nothing.

    uv run python bench/saga/bench_checkout.py --shoppers 64 --duration 20

Floor: `--shoppers` concurrent floor checkouts, closed loop. Full rate: `--shoppers` clients each
add one unit to their cart and check out, again and again (closed loop). Half rate: checkouts
started on a fixed schedule at half the full rate's sustained figure (open loop), so their latency
is not inflated by queueing in the clients. Each scenario: `--warm-up` seconds unmeasured, then a
`--duration` window (`steady_state.py` says what counts), then up to `--drain` seconds for the saga
to finish the accepted orders.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncpg
import cpu_groups
import httpx
from cpu_groups import PostgresMonitor
from floor import Floor
from floor import closed_loop as floor_closed_loop
from process_cpu import CpuWindow
from report import cpu_table, floor_definition, load_average, scenario_table, shape_line
from shopper_load import Shopper, closed_loop, login, new_shopper, open_loop
from steady_state import (
    CONFIRMED,
    PENDING,
    Checkout,
    Figures,
    SagaLedger,
    Window,
    WindowSample,
    figures,
    sample_window,
)

from chassis.postgres import database_url, ensure_database
from chassis.procfile import replica_procfile, variable
from chassis.settings import AmqpSettings
from chassis.testing.events import EventTap
from chassis.testing.process import ServiceProcess, free_port
from chassis.testing.redis_keys import delete_keys
from ecommerce.events.v1 import events_pb2

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ADMIN_EMAIL, ADMIN_PASSWORD = "bench.admin@example.com", "bench-admin-password"
PROCESSES = (
    "service-user", "service-product", "service-cart", "service-order", "service-payment",
    "payment-provider", "api-gateway",
)  # fmt: skip


def platform_env(run_id: str) -> dict[str, str]:
    ports = {
        name: free_port()
        for name in ("user", "product", "cart", "order", "payment", "provider", "gw", "gwm")
    }
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "LOG_LEVEL": "WARNING",
            "POSTGRES_URL": POSTGRES_URL,
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": f"bench:{run_id}:",
            # One signing key for every service-user replica (each would make its own without).
            "JWT_PRIVATE_KEY_FILE": str(
                Path(tempfile.mkdtemp(prefix="bench-keys-")) / "jwt-signing-key.pem"
            ),
            "AMQP_URL": AMQP_URL,
            "EVENTS_EXCHANGE": f"bench.{run_id}.events",
            "QUEUE_PREFIX": f"bench.{run_id}.",
            "USER_GRPC_PORT": str(ports["user"]),
            "USER_METRICS_PORT": "0",
            "USER_DB_NAME": f"bench_{run_id}_users",
            "PRODUCT_GRPC_PORT": str(ports["product"]),
            "PRODUCT_METRICS_PORT": "0",
            "PRODUCT_DB_NAME": f"bench_{run_id}_products",
            "CART_GRPC_PORT": str(ports["cart"]),
            "CART_METRICS_PORT": "0",
            "CART_STORE": "redis",
            "ORDER_GRPC_PORT": str(ports["order"]),
            "ORDER_METRICS_PORT": "0",
            "ORDER_DB_NAME": f"bench_{run_id}_orders",
            "PAYMENT_GRPC_PORT": str(ports["payment"]),
            "PAYMENT_METRICS_PORT": "0",
            "PAYMENT_DB_NAME": f"bench_{run_id}_payments",
            "PAYMENT_PROVIDER_HOST": "127.0.0.1",
            "PAYMENT_PROVIDER_PORT": str(ports["provider"]),
            "PAYMENT_PROVIDER_DB_NAME": f"bench_{run_id}_payment_provider",
            "PAYMENT_PROVIDER_URL": f"http://127.0.0.1:{ports['provider']}",
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(ports["gw"]),
            "GATEWAY_METRICS_PORT": str(ports["gwm"]),
            "USER_SERVICE_ADDR": f"127.0.0.1:{ports['user']}",
            "PRODUCT_SERVICE_ADDR": f"127.0.0.1:{ports['product']}",
            "CART_SERVICE_ADDR": f"127.0.0.1:{ports['cart']}",
            "ORDER_SERVICE_ADDR": f"127.0.0.1:{ports['order']}",
            "PAYMENT_SERVICE_ADDR": f"127.0.0.1:{ports['payment']}",
            "ADMIN_EMAIL": ADMIN_EMAIL,
            "ADMIN_PASSWORD": ADMIN_PASSWORD,
            # Registration is not what is measured: cheap hashes, no per-client limits.
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_COST_KIB": "8192",
            "ARGON2_PARALLELISM": "1",
            "LOGIN_RATE_PER_CLIENT": "1000000",
            "REGISTER_RATE_PER_CLIENT": "1000000",
            "ARGON2_MAX_QUEUED": "1000",
        }
    )
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    return env


async def wait_ready(base_url: str, processes: list[ServiceProcess]) -> None:
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            for process in processes:
                if process.returncode is not None:
                    raise RuntimeError(f"{process.name} exited\n{process.output_tail()}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError("the platform did not become ready")


async def run_floor(
    args: argparse.Namespace, run_id: str, monitor: PostgresMonitor, when: str
) -> tuple[Figures, str]:
    """The floor scenario: `--shoppers` concurrent floor checkouts in a closed loop; `when`:
    before or after the platform's scenarios."""
    async with Floor(run_id, POSTGRES_URL, REDIS_URL, AMQP_URL) as floor:
        databases = list(floor.databases.values())

        async def counters() -> dict[str, float]:
            return {"commits": await monitor.commits(databases), "events": floor.consumed}

        async def groups_at_end(cpu: CpuWindow) -> dict[str, set[int]]:
            backends = await monitor.backend_pids(databases)
            return cpu_groups.groups(cpu, services={}, postgres_backends=backends)

        checkouts: list[Checkout] = []
        window = Window.from_now(args.warm_up, args.duration)
        sampling = asyncio.create_task(sample_window(window, groups_at_end, counters))
        await floor_closed_loop(floor, args.shoppers, window, checkouts)
        sample = await sampling
    result = figures(
        f"floor ({args.shoppers} concurrent, {when} the platform)",
        window,
        checkouts,
        outcome=lambda c: c.failure or (CONFIRMED if c.done_at else PENDING),
        done_at=lambda c: c.done_at,
    )
    result.unit = "checkouts/s"
    result.cpu_ms = cpu_groups.milliseconds_per(
        sample.cpu, sample.groups, result.completed_in_window
    )
    shape = shape_line(
        f"floor {when} the platform",
        sample.counters["commits"],
        sample.counters["events"],
        result.completed_in_window,
    )
    return result, shape


@dataclass
class Platform:
    """What the platform scenarios share: the processes, their databases, the event tap."""

    processes: list[ServiceProcess]
    databases: list[str]
    monitor: PostgresMonitor
    tap: EventTap
    ledger: SagaLedger
    shoppers: list[Shopper]
    products: list[str]

    async def counters(self) -> dict[str, float]:
        commits = await self.monitor.commits(self.databases)
        return {"commits": commits, "events": len(self.tap.events)}

    async def groups_at_end(self, cpu: CpuWindow) -> dict[str, set[int]]:
        backends = await self.monitor.backend_pids(self.databases)
        services = {process.name: process.pid for process in self.processes}
        return cpu_groups.groups(cpu, services=services, postgres_backends=backends)

    async def measure(
        self,
        name: str,
        window: Window,
        load: Callable[[list[Checkout]], Awaitable[T]],
        drain_seconds: float,
    ) -> tuple[Figures, WindowSample, T]:
        """Run `load` (it appends each checkout it starts), sample its window, wait for the
        saga to finish every accepted order, and take the figures."""
        checkouts: list[Checkout] = []
        sampling = asyncio.create_task(sample_window(window, self.groups_at_end, self.counters))
        loaded = await load(checkouts)
        sample = await sampling
        await self.ledger.drain(checkouts, drain_seconds)
        result = figures(name, window, checkouts, self.ledger.outcome, self.ledger.done_at)
        result.cpu_ms = cpu_groups.milliseconds_per(
            sample.cpu, sample.groups, result.completed_in_window
        )
        return result, sample, loaded


async def run_platform(
    args: argparse.Namespace, platform: Platform
) -> tuple[list[Figures], list[str]]:
    """Full rate (closed loop), then half of the full rate's sustained figure (open loop)."""
    shoppers, products = platform.shoppers, platform.products
    window = Window.from_now(args.warm_up, args.duration)
    full, sample, _ = await platform.measure(
        f"platform full rate ({args.shoppers} shoppers)",
        window,
        lambda checkouts: closed_loop(shoppers, products, window, checkouts, platform.ledger),
        args.drain,
    )
    commits, events = sample.counters["commits"], sample.counters["events"]
    shapes = [shape_line("platform at full rate", commits, events, full.completed_in_window)]
    progress(f"full rate: {full.rate:,.1f} confirmed/s")
    results = [full]
    rate = max(full.rate / 2, 1.0)
    for run in range(args.half_runs):
        window = Window.from_now(args.warm_up, args.duration)
        suffix = f", run {run + 1}" if args.half_runs > 1 else ""
        half, _, late = await platform.measure(
            f"platform half rate{suffix}",
            window,
            lambda checkouts, w=window: open_loop(
                shoppers, products, w, rate, checkouts, platform.ledger
            ),
            args.drain,
        )
        half.offered_per_second = rate
        half.late_starts = late
        progress(f"half rate: {half.rate:,.1f} confirmed/s, p99 {half.percentile(99):,.0f} ms")
        results.append(half)
    return results, shapes


def resident_mib(processes: list[ServiceProcess]) -> dict[str, float]:
    """Resident memory of the largest process under each honcho (the service itself)."""
    cpu = CpuWindow()
    cpu.close()
    found = {}
    for process in processes:
        sizes = []
        for pid in cpu.descendants([process.pid]):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        found[process.name] = max(sizes, default=float("nan"))
    return found


async def start_platform(
    args: argparse.Namespace, run_id: str, env: dict[str, str], databases: list[str]
) -> list[ServiceProcess]:
    for name in databases:
        await ensure_database(POSTGRES_URL, name)
    honcho = str(Path(sys.executable).with_name("honcho"))
    procfile, names = ROOT / "Procfile", list(PROCESSES)
    replicas = getattr(args, "replicas", 1)  # bench_load.py runs one of each
    if replicas > 1:
        # As `make dev REPLICAS=N` runs them: N replicas of every gRPC service, one gateway.
        services = [name for name in PROCESSES if name.startswith("service-")]
        ports = {variable(service, "GRPC_PORT"): [free_port() for _ in range(replicas)]
                 for service in services}  # fmt: skip
        ports.update({variable(service, "METRICS_PORT"): [0] * replicas
                      for service in services})  # fmt: skip
        # Beside the run's signing key: `cleanup` removes the folder.
        procfile = Path(env["JWT_PRIVATE_KEY_FILE"]).parent / "Procfile"
        procfile.write_text(replica_procfile(procfile_text(), ports))
        names = [f"{s}-{k}" for s in services for k in range(1, replicas + 1)]
        names += [name for name in PROCESSES if not name.startswith("service-")]
    processes = [
        ServiceProcess([honcho, "--no-colour", "-d", str(ROOT), "-f", str(procfile), "start",
                        name], env=env, cwd=str(ROOT), name=name).start()
        for name in names
    ]  # fmt: skip
    return processes


def platform_databases(env: dict[str, str]) -> list[str]:
    """The databases of the platform's processes (made before the start, dropped after)."""
    return [
        env[name]
        for name in (
            "USER_DB_NAME", "PRODUCT_DB_NAME", "ORDER_DB_NAME", "PAYMENT_DB_NAME",
            "PAYMENT_PROVIDER_DB_NAME",
        )
    ]  # fmt: skip


def procfile_text() -> str:
    return (ROOT / "Procfile").read_text(encoding="utf-8")


async def create_products(client: httpx.AsyncClient, run_id: str, count: int) -> list[str]:
    admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    products = []
    for index in range(count):
        reply = await client.post(
            "/api/v1/products",
            headers=admin,
            json={"sku": f"BENCH-{run_id}-{index}", "name": f"Bench {index}",
                  "price_cents": 1000, "stock": 2_000_000_000},
        )  # fmt: skip
        reply.raise_for_status()
        products.append(reply.json()["id"])
    return products


def progress(message: str) -> None:
    """A line on stderr while the benchmark runs (the tables go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shoppers", type=int, default=64, help="concurrency of every scenario")
    parser.add_argument("--duration", type=float, default=20.0, help="measured window, seconds")
    parser.add_argument("--warm-up", type=float, default=5.0, help="unmeasured seconds first")
    parser.add_argument("--products", type=int, default=20)
    parser.add_argument(
        "--drain",
        type=float,
        default=40.0,
        help="seconds to wait after a scenario for its orders to be confirmed or cancelled "
        "(past the saga timeout, 30 s, so a TIMEOUT cancellation is seen)",
    )
    parser.add_argument("--half-runs", type=int, default=1, help="runs of the half-rate scenario")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor scenario")
    parser.add_argument(
        "--replicas", type=int, default=1, help="replicas of every gRPC service (one gateway)"
    )
    return parser.parse_args()


async def main() -> None:
    args = arguments()
    run_id = uuid.uuid4().hex[:8]
    load_before = load_average()
    monitor = PostgresMonitor(POSTGRES_URL)
    await monitor.commits([])  # holds its connection slot from the start (the server is shared)
    floors: list[Figures] = []
    floor_shapes: list[str] = []
    if not args.no_floor:
        floor, shape = await run_floor(args, run_id, monitor, "before")
        floors.append(floor)
        floor_shapes.append(shape)
    progress(f"floor: {floors[0].rate:,.1f} checkouts/s" if floors else "floor skipped")

    env = platform_env(run_id)
    databases = platform_databases(env)
    processes: list[ServiceProcess] = []
    shoppers: list[Shopper] = []
    base_url = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    amqp = AmqpSettings(amqp_url=AMQP_URL, events_exchange=env["EVENTS_EXCHANGE"])
    try:
        processes = await start_platform(args, run_id, env, databases)
        await wait_ready(base_url, processes)
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=30) as client,
            EventTap(amqp, [events_pb2.OrderCancelled]) as tap,
        ):
            products = await create_products(client, run_id, args.products)
            shoppers += [await new_shopper(base_url) for _ in range(args.shoppers)]
            progress("platform ready, shoppers registered")
            ledger = SagaLedger(tap)
            following = asyncio.create_task(ledger.follow())
            platform = Platform(processes, databases, monitor, tap, ledger, shoppers, products)
            try:
                results, shapes = await run_platform(args, platform)
            finally:
                following.cancel()
        memory = resident_mib(processes)
    finally:
        for shopper in shoppers:
            await shopper.close()
        for process in processes:
            process.stop()
        await cleanup(env, databases)
    try:
        if not args.no_floor:
            # The floor again, the platform stopped: the ceiling is the mean of both runs.
            floor, shape = await run_floor(args, run_id, monitor, "after")
            floors.append(floor)
            floor_shapes.append(shape)
            progress(f"floor again: {floor.rate:,.1f} checkouts/s")
    finally:
        await monitor.close()

    print(f"### Checkout saga (`bench/saga/bench_checkout.py`), {time.strftime('%Y-%m-%d %H:%M')}")
    print(
        f"\n{args.shoppers} concurrent, {args.products} products; each scenario: "
        f"{args.warm_up:.0f} s warm-up, then a {args.duration:.0f} s window in which completions "
        "are counted and CPU is sampled; latency and failures of the checkouts started in the "
        f"window (a failure: any non-2xx, a transport error, any cancellation, or no outcome "
        f"{args.drain:.0f} s after the load). Load average (1/5/15 min) before: {load_before}, "
        f"after: {load_average()}.\n"
    )
    print(scenario_table(floors, results))
    print(
        f"\n{floor_definition()} Ratio: the platform's confirmed/s over the floor's checkouts/s, "
        "the mean of the floor run before the platform's scenarios and the one after them (the "
        "machine's speed drifts during a run; the two floors show by how much)."
    )
    for figures_ in results:
        if figures_.late_starts:
            late = figures_.late_starts
            print(f"- {figures_.name}: {late} checkouts started late (every shopper was busy)")
    print("\nCPU milliseconds per completed checkout, sampled over each window (2 cores give")
    print("2,000 ms per second; RabbitMQ and Redis serve the whole machine, PostgreSQL is counted")
    print("for the benchmark's own databases only):\n")
    print(cpu_table([*floors, *results]))
    print()
    for line in [*floor_shapes, *shapes]:
        print(line)
    print("- resident memory after the runs, MiB: " + ", ".join(
        f"{name} {mib:.0f}" for name, mib in memory.items()
    ))  # fmt: skip


async def cleanup(env: dict[str, str], databases: list[str]) -> None:
    import aio_pika

    # The run's folder: its signing key (a private key: never left behind) and Procfile.
    shutil.rmtree(Path(env["JWT_PRIVATE_KEY_FILE"]).parent, ignore_errors=True)
    conn = await asyncpg.connect(database_url(POSTGRES_URL, "postgres"))
    try:
        for name in databases:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    await delete_keys(REDIS_URL, env["REDIS_KEY_PREFIX"])
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        exchange = env["EVENTS_EXCHANGE"]
        names = [f"{env['QUEUE_PREFIX']}{s}{suffix}" for s in PROCESSES for suffix in ("", ".dlq")]
        exchanges = [exchange, f"{exchange}.dlx", f"{exchange}.unrouted"]
        for kind, items in (("queue", [*names, f"{exchange}.unrouted"]), ("exchange", exchanges)):
            for name in items:
                channel = await connection.channel()
                try:
                    if kind == "queue":
                        await channel.queue_delete(name)
                    else:
                        await channel.exchange_delete(name)
                except aio_pika.exceptions.AMQPError:
                    pass
                finally:
                    if not channel.is_closed:
                        await channel.close()


if __name__ == "__main__":
    asyncio.run(main())
