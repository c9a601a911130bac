"""The load generator against the checkout benchmark: do their numbers agree?

Starts one platform the way bench/saga does (same settings, its own databases, Redis prefix and
exchange, removed at the end), then measures its confirmed checkouts per second twice at the same
concurrency, each over a steady-state window after a warm-up:
1. bench/saga's closed loop (`--users` shoppers adding one unit and checking out, httpx);
2. loadgenerator/ (locust, headless) with `LOAD_MIX=checkout`: the same shape, `--users` locust
   users, the rate read from locust's own per-second history of its `checkout -> CONFIRMED` row.

They measure the same thing from two clients; the ratio says how far apart they land (each
client costs CPU on the same cores, locust's more per request). Prints a Markdown table.

    uv run python bench/load/bench_load.py --users 64 --warm-up 10 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "bench" / "saga"))

import bench_checkout as saga  # noqa: E402 - the saga benchmark's platform, reused as it is
from cpu_groups import PostgresMonitor  # noqa: E402
from shopper_load import closed_loop, new_shopper  # noqa: E402
from steady_state import SagaLedger, Window  # noqa: E402

from chassis.settings import AmqpSettings  # noqa: E402
from chassis.testing.events import EventTap  # noqa: E402
from ecommerce.events.v1 import events_pb2  # noqa: E402

SAGA_ROW = "checkout -> CONFIRMED"  # the locustfile's row of confirmed checkouts


def locust_rate(history: Path, started: float, warm_up: float, seconds: float) -> tuple[float, int]:
    """Confirmed checkouts per second inside the window, from locust's cumulative history, and
    the failures of that row over the whole run."""
    rows = [r for r in csv.DictReader(history.open()) if r["Name"] == SAGA_ROW]
    points = [
        (float(r["Timestamp"]), int(r["Total Request Count"]) - int(r["Total Failure Count"]))
        for r in rows
    ]
    start, end = started + warm_up, started + warm_up + seconds
    inside = [(t, n) for t, n in points if start <= t <= end]
    failures = int(rows[-1]["Total Failure Count"]) if rows else 0
    if len(inside) < 2:
        return float("nan"), failures
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / (t1 - t0), failures


def run_locust(base_url: str, users: int, seconds: float, prefix: Path) -> float:
    """Headless locust, checkout mix; returns the wall-clock time it started."""
    command = [
        "uv", "run", "--frozen", "--quiet", "--project", str(ROOT / "loadgenerator"),
        "locust", "-f", str(ROOT / "loadgenerator" / "locustfile.py"), "--headless",
        "--host", base_url, "--users", str(users), "--spawn-rate", str(min(users, 16)),
        "--run-time", f"{seconds:.0f}s", "--csv", str(prefix), "--csv-full-history",
        "--only-summary", "--loglevel", "WARNING",
        # Failed requests are figures of the table, not a failure of the benchmark.
        "--exit-code-on-error", "0",
    ]  # fmt: skip
    started = time.time()
    subprocess.run(
        command,
        env={**os.environ, "LOAD_MIX": "checkout"},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--warm-up", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--products", type=int, default=20)
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:8]
    load_before = saga.load_average()
    env = saga.platform_env(run_id)
    databases = saga.platform_databases(env)
    base_url = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    amqp = AmqpSettings(amqp_url=saga.AMQP_URL, events_exchange=env["EVENTS_EXCHANGE"])
    monitor = PostgresMonitor(saga.POSTGRES_URL)
    processes = []
    shoppers = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        processes = await saga.start_platform(args, run_id, env, databases)
        await saga.wait_ready(base_url, processes)
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=30) as client,
            EventTap(amqp, [events_pb2.OrderCancelled]) as tap,
        ):
            products = await saga.create_products(client, run_id, args.products)
            shoppers = [await new_shopper(base_url) for _ in range(args.users)]
            ledger = SagaLedger(tap)
            following = asyncio.create_task(ledger.follow())
            platform = saga.Platform(processes, databases, monitor, tap, ledger, shoppers, products)
            window = Window.from_now(args.warm_up, args.duration)
            bench, _, _ = await platform.measure(
                f"bench/saga closed loop ({args.users} shoppers)",
                window,
                lambda checkouts: closed_loop(shoppers, products, window, checkouts, ledger),
                30.0,
            )
            following.cancel()
            saga.progress(f"bench/saga: {bench.rate:,.1f} confirmed/s")
        prefix = workdir / "locust"
        started = await asyncio.to_thread(
            run_locust, base_url, args.users, args.warm_up + args.duration + 2, prefix
        )
        rate, failures = locust_rate(
            Path(f"{prefix}_stats_history.csv"), started, args.warm_up, args.duration
        )
        saga.progress(f"locust: {rate:,.1f} confirmed/s")
    finally:
        for shopper in shoppers:
            await shopper.close()
        for process in processes:
            process.stop()
        await saga.cleanup(env, databases)
        await monitor.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"### Load generator vs checkout benchmark, {time.strftime('%Y-%m-%d %H:%M')}\n")
    print(
        f"One platform, {args.users} concurrent shoppers adding one unit and checking out in a "
        f"closed loop; {args.warm_up:.0f} s warm-up, then a {args.duration:.0f} s window. Load "
        f"average (1/5/15 min) before {load_before}, after {saga.load_average()}.\n"
    )
    print("| client | confirmed/s | ceiling | ratio | failed |\n| --- | ---: | --- | ---: | ---: |")
    print(f"| bench/saga (httpx) | {bench.rate:,.1f} | - | - | {bench.failed} |")
    ratio = rate / bench.rate if bench.rate else float("nan")
    print(
        f"| loadgenerator (locust, `LOAD_MIX=checkout`) | {rate:,.1f} "
        f"| bench/saga: {bench.rate:,.1f}/s | {ratio:.0%} | {failures} |"
    )


if __name__ == "__main__":
    asyncio.run(main())
