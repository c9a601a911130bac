"""Checkout saga benchmark: sustained checkouts per second that reach CONFIRMED, and the latency
from `POST /api/v1/checkout` to the `order.confirmed` event, at full rate and at half of it, with
the PostgreSQL transactions and broker messages each checkout costs.

Starts the five processes of the root Procfile (honcho, one per line) against POSTGRES_URL /
REDIS_URL / AMQP_URL (localhost defaults), in databases `bench_<id>_*`, a Redis prefix and an
exchange of its own, all removed at the end. Prints figures, asserts nothing.

    uv run python bench/saga/bench_checkout.py --shoppers 64 --duration 20

Full rate: `--shoppers` clients each add one unit to their cart and check out, again and again
(closed loop). Half rate: checkouts are started on a fixed schedule at half the full rate
(open loop), so their latency is not inflated by queueing in the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from chassis.postgres import database_url, ensure_database
from chassis.settings import AmqpSettings
from chassis.testing.events import EventTap
from chassis.testing.process import ServiceProcess, free_port
from ecommerce.events.v1 import events_pb2

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ADMIN_EMAIL, ADMIN_PASSWORD = "bench.admin@example.com", "bench-admin-password"
PROCESSES = ("service-user", "service-product", "service-cart", "service-order", "api-gateway")


def cpu_seconds_by_command() -> dict[str, float]:
    """CPU seconds (user + system) of every process on the machine, summed by command name
    (Linux /proc): the services' console scripts, postgres, beam.smp (RabbitMQ), this script."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, tail = stat.read_text().rpartition(")")
        except OSError:
            continue
        fields = tail.split()
        name = head.partition("(")[2]
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return totals


@dataclass
class Run:
    """Start time of each checkout by order id, and when its confirmation was seen."""

    started: dict[str, float] = field(default_factory=dict)
    confirmed: dict[str, float] = field(default_factory=dict)
    failed: int = 0


def platform_env(run_id: str) -> dict[str, str]:
    ports = {name: free_port() for name in ("user", "product", "cart", "order", "gw", "gwm")}
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "LOG_LEVEL": "WARNING",
            "POSTGRES_URL": POSTGRES_URL,
            "REDIS_URL": REDIS_URL,
            "REDIS_KEY_PREFIX": f"bench:{run_id}:",
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
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(ports["gw"]),
            "GATEWAY_METRICS_PORT": str(ports["gwm"]),
            "USER_SERVICE_ADDR": f"127.0.0.1:{ports['user']}",
            "PRODUCT_SERVICE_ADDR": f"127.0.0.1:{ports['product']}",
            "CART_SERVICE_ADDR": f"127.0.0.1:{ports['cart']}",
            "ORDER_SERVICE_ADDR": f"127.0.0.1:{ports['order']}",
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


async def xact_commits(databases: list[str]) -> int:
    conn = await asyncpg.connect(database_url(POSTGRES_URL, "postgres"))
    try:
        value = await conn.fetchval(
            "SELECT sum(xact_commit) FROM pg_stat_database WHERE datname = ANY($1)", databases
        )
        return int(value or 0)
    finally:
        await conn.close()


async def login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    reply = await client.post("/api/v1/login", json={"email": email, "password": password})
    reply.raise_for_status()
    return {"Authorization": f"Bearer {reply.json()['access_token']}"}


@dataclass
class Shopper:
    """A shopper with a client of its own: one httpx pool of many connections shared by every
    shopper cost the benchmark more CPU than the gateway it measures (httpcore scans its whole
    pool on each request), on the same two cores."""

    client: httpx.AsyncClient
    headers: dict[str, str]


async def new_shopper(base_url: str) -> Shopper:
    client = httpx.AsyncClient(
        base_url=base_url, timeout=30, limits=httpx.Limits(max_connections=8)
    )
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    reply = await client.post(
        "/api/v1/register",
        json={"email": email, "password": "bench password 1", "full_name": "Bench"},
    )
    reply.raise_for_status()
    return Shopper(client, await login(client, email, "bench password 1"))


async def one_checkout(shopper: Shopper, products: list[str], run: Run) -> None:
    started = time.perf_counter()
    try:
        await _add_and_check_out(shopper, products, run, started)
    except httpx.TransportError:
        run.failed += 1


async def _add_and_check_out(
    shopper: Shopper, products: list[str], run: Run, started: float
) -> None:
    add = await shopper.client.post(
        "/api/v1/cart/items",
        headers=shopper.headers,
        json={"product_id": random.choice(products), "quantity": 1},
    )
    checkout = await shopper.client.post("/api/v1/checkout", headers=shopper.headers)
    if add.status_code != 200 or checkout.status_code != 202:
        run.failed += 1
        return
    run.started[checkout.json()["id"]] = started


async def full_rate(shoppers: list[Shopper], products: list[str], seconds: float) -> Run:
    run = Run()
    stop = time.perf_counter() + seconds

    async def loop(shopper: Shopper) -> None:
        while time.perf_counter() < stop:
            await one_checkout(shopper, products, run)

    await asyncio.gather(*(loop(shopper) for shopper in shoppers))
    return run


async def fixed_rate(
    shoppers: list[Shopper],
    products: list[str],
    seconds: float,
    rate: float,
) -> Run:
    run = Run()
    tasks: list[asyncio.Task[None]] = []
    begin = time.perf_counter()
    for index in range(int(seconds * rate)):
        delay = begin + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        shopper = shoppers[index % len(shoppers)]
        tasks.append(asyncio.create_task(one_checkout(shopper, products, run)))
    await asyncio.gather(*tasks)
    return run


async def wait_confirmed(run: Run, tap: EventTap) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for event in tap.matching(events_pb2.OrderConfirmed):
            if event.correlation_id in run.started and event.correlation_id not in run.confirmed:
                run.confirmed[event.correlation_id] = event.seen_at
        if len(run.confirmed) >= len(run.started):
            return
        await asyncio.sleep(0.2)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(name: str, run: Run, seconds: float) -> tuple[str, str, str, str, str, str]:
    latencies = [(run.confirmed[o] - run.started[o]) * 1000 for o in run.confirmed]
    rate = len(run.confirmed) / seconds
    return (
        name,
        f"{rate:,.0f}",
        f"{percentile(latencies, 50):,.0f}",
        f"{percentile(latencies, 95):,.0f}",
        f"{percentile(latencies, 99):,.0f}",
        f"{run.failed}",
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shoppers", type=int, default=64)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--products", type=int, default=20)
    args = parser.parse_args()

    run_id = uuid.uuid4().hex[:8]
    env = platform_env(run_id)
    databases = [env["USER_DB_NAME"], env["PRODUCT_DB_NAME"], env["ORDER_DB_NAME"]]
    for name in databases:
        await ensure_database(POSTGRES_URL, name)
    honcho = str(Path(sys.executable).with_name("honcho"))
    processes = [
        ServiceProcess([honcho, "--no-colour", "-f", str(ROOT / "Procfile"), "start", name],
                       env=env, cwd=str(ROOT), name=name).start()
        for name in PROCESSES
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    amqp = AmqpSettings(amqp_url=AMQP_URL, events_exchange=env["EVENTS_EXCHANGE"])
    rows = []
    cpu_before: dict[str, float] = {}
    cpu_after: dict[str, float] = {}
    shoppers: list[Shopper] = []
    try:
        await wait_ready(base_url, processes)
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=30) as client,
            EventTap(amqp, []) as tap,
        ):
            admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
            products = []
            for index in range(args.products):
                reply = await client.post(
                    "/api/v1/products",
                    headers=admin,
                    json={"sku": f"BENCH-{run_id}-{index}", "name": f"Bench {index}",
                          "price_cents": 1000, "stock": 2_000_000_000},
                )  # fmt: skip
                reply.raise_for_status()
                products.append(reply.json()["id"])
            shoppers += [await new_shopper(base_url) for _ in range(args.shoppers)]
            await full_rate(shoppers, products, 3)  # warm-up: caches, plans, pools

            commits_before, events_before = await xact_commits(databases), len(tap.events)
            cpu_before = cpu_seconds_by_command()
            full = await full_rate(shoppers, products, args.duration)
            cpu_after = cpu_seconds_by_command()
            await wait_confirmed(full, tap)
            commits = await xact_commits(databases) - commits_before
            events = len(tap.events) - events_before
            rows.append(summary(f"full rate ({args.shoppers} shoppers)", full, args.duration))
            per_checkout = max(len(full.started), 1)

            half_rate = max(len(full.confirmed) / args.duration / 2, 1.0)
            half = await fixed_rate(shoppers, products, args.duration, half_rate)
            await wait_confirmed(half, tap)
            rows.append(summary(f"half rate ({half_rate:,.0f}/s offered)", half, args.duration))
    finally:
        for shopper in shoppers:
            await shopper.client.aclose()
        for process in processes:
            process.stop()
        await cleanup(env, databases)

    print(f"\ncheckout -> CONFIRMED, {args.duration:.0f} s per scenario, {args.products} products")
    header = ("scenario", "confirmed/s", "p50 ms", "p95 ms", "p99 ms", "failed")
    print("  ".join(f"{h:>14}" for h in header))
    for row in rows:
        print("  ".join(f"{cell:>14}" for cell in row))
    print(f"PostgreSQL transactions per checkout (3 databases): {commits / per_checkout:.1f}")
    print(f"broker messages per checkout (all saga events seen): {events / per_checkout:.1f}")
    print("CPU per checkout at full rate, ms (2 cores give 2,000 ms per second):")
    spent = {name: cpu_after.get(name, 0.0) - cpu_before.get(name, 0.0) for name in cpu_after}
    for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        if seconds * 1000 / per_checkout >= 0.5:
            print(f"  {name:>16} {seconds * 1000 / per_checkout:6.1f}")
    print(f"  {'all':>16} {sum(spent.values()) * 1000 / per_checkout:6.1f}")


async def cleanup(env: dict[str, str], databases: list[str]) -> None:
    import aio_pika
    import redis.asyncio as redis

    conn = await asyncpg.connect(database_url(POSTGRES_URL, "postgres"))
    try:
        for name in databases:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    client = redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{env['REDIS_KEY_PREFIX']}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
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
