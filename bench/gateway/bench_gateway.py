"""Gateway benchmark: each route next to its ceiling, served the same way, with the ratios.

- POST /api/v1/login (argon2 at service-user's default cost), each request from its own client
  address (X-Forwarded-For from 127.0.0.1, which this gateway trusts), so the per-client login
  limit sees a population of shoppers;
- GET /api/v1/users/me against FastAPI calling a grpc.aio echo of GetUser (`bare_app.py`,
  `echo_upstream.py`);
- GET /api/v1/products/{id} with a hot micro-cache against a bare FastAPI endpoint of its shape.

Starts service-user, service-product and the gateway as local processes against POSTGRES_URL /
REDIS_URL / AMQP_URL (localhost defaults), in databases `bench_<id>_*`, a Redis prefix and an
exchange of their own, removed at the end. Needs `wrk` (Debian: apt-get install -y wrk). Prints a
Markdown table, asserts nothing.

    uv run python bench/gateway/bench_gateway.py --duration 10 --runs 3 --connections 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg
import httpx

from chassis.postgres import database_url, ensure_database
from chassis.testing.process import ServiceProcess, free_port
from chassis.testing.redis_keys import delete_keys

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
UVICORN_FLAGS = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--workers", "1"]
ADMIN_EMAIL, ADMIN_PASSWORD = "bench.admin@example.com", "bench-admin-password"
# service-user's defaults: argon2-cffi's RFC 9106 low-memory profile.
ARGON2 = {"ARGON2_TIME_COST": "3", "ARGON2_MEMORY_COST_KIB": "65536", "ARGON2_PARALLELISM": "4"}


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency_ms(output: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    return float(match.group(1)) * _UNIT_MS[match.group(2)] if match else float("nan")


def run_wrk(
    url: str,
    *,
    duration: int,
    connections: int,
    script: Path | None = None,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script:
        command += ["-s", str(script)]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return WrkResult(
        requests_per_second=float(rps.group(1)) if rps else float("nan"),
        p50_ms=_latency_ms(output, "50"),
        p99_ms=_latency_ms(output, "99"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def median_of(results: list[WrkResult]) -> WrkResult:
    return WrkResult(
        statistics.median(r.requests_per_second for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.non_2xx for r in results),
    )


async def wait_http(url: str, process: ServiceProcess) -> None:
    async with httpx.AsyncClient(timeout=1.0) as client:
        for _ in range(600):
            if process.returncode is not None:
                raise RuntimeError(process.output_tail())
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    raise TimeoutError(url)


LOGIN_LUA = """
-- Every login from its own client address (X-Forwarded-For from 127.0.0.1, a trusted proxy),
-- as a population of shoppers would: the per-client login limit sees many clients, not one.
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("id", threads)
end
init = function(args)
  count = 0
end
request = function()
  count = count + 1
  local address = "127." .. id .. "." .. (math.floor(count / 250) % 250) .. "." .. (count % 250 + 1)
  local headers = {["Content-Type"] = "application/json", ["X-Forwarded-For"] = address}
  return wrk.format("POST", nil, headers, BODY)
end
"""


def row(name: str, result: WrkResult, ceiling: WrkResult | None = None, label: str = "") -> str:
    """One table row; with a ceiling, its figures and the ratios to them."""
    cells = [
        name,
        f"{result.requests_per_second:,.0f}",
        f"{result.p50_ms:.1f}",
        f"{result.p99_ms:.1f}",
        str(result.non_2xx),
    ]
    if ceiling is None:
        cells += ["-", "-", "-"]
    else:
        cells += [
            f"{label}: {ceiling.requests_per_second:,.0f} req/s, p99 {ceiling.p99_ms:.1f} ms",
            f"{result.requests_per_second / ceiling.requests_per_second:.0%}",
            f"{result.p99_ms / ceiling.p99_ms:.1f}x",
        ]
    return "| " + " | ".join(cells) + " |"


def product_env(
    run: str, common: dict[str, str], database: str, port: int, user_port: int
) -> dict[str, str]:
    return {
        **common,
        "PRODUCT_DB_NAME": database,
        "PRODUCT_GRPC_PORT": str(port),
        "PRODUCT_METRICS_PORT": "0",
        "REDIS_KEY_PREFIX": f"bench:{run}:products:",
        # service-product verifies admin tokens against service-user's keys.
        "USER_SERVICE_ADDR": f"127.0.0.1:{user_port}",
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each comparison (median)")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")

    server = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    amqp_url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    run = uuid.uuid4().hex[:8]
    load_before = os.getloadavg()
    databases = [f"bench_{run}_users", f"bench_{run}_products"]
    for name in databases:
        await ensure_database(server, name)
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    user_port, product_port, gw_port, bare_port, echo_port = (free_port() for _ in range(5))
    common = {
        "POSTGRES_URL": server,
        "REDIS_URL": redis_url,
        "AMQP_URL": amqp_url,
        "EVENTS_EXCHANGE": f"bench.{run}.events",
        "QUEUE_PREFIX": f"bench.{run}.",
    }
    processes = [
        ServiceProcess(
            [str(BIN / "service-user")],
            name="service-user",
            env={
                **common,
                **ARGON2,
                "USER_DB_NAME": databases[0],
                "USER_GRPC_PORT": str(user_port),
                "USER_METRICS_PORT": "0",
                "REDIS_KEY_PREFIX": f"bench:{run}:users:",
                "JWT_PRIVATE_KEY_FILE": str(workdir / "jwt.pem"),
                "ADMIN_EMAIL": ADMIN_EMAIL,
                "ADMIN_PASSWORD": ADMIN_PASSWORD,
            },
        ),
        ServiceProcess(
            [str(BIN / "service-product")],
            name="service-product",
            env=product_env(run, common, databases[1], product_port, user_port),
        ),
        ServiceProcess(
            [str(BIN / "api-gateway")],
            name="api-gateway",
            env={
                **common,
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(gw_port),
                "GATEWAY_METRICS_PORT": "0",
                "GATEWAY_TRUSTED_PROXIES": "127.0.0.1",  # the login script's X-Forwarded-For
                "USER_SERVICE_ADDR": f"127.0.0.1:{user_port}",
                "PRODUCT_SERVICE_ADDR": f"127.0.0.1:{product_port}",
                "CART_SERVICE_ADDR": "",
                "ORDER_SERVICE_ADDR": "",
            },
        ),
        ServiceProcess(
            [sys.executable, str(HERE / "echo_upstream.py"), str(echo_port)], name="echo"
        ),
        ServiceProcess(
            [
                str(BIN / "uvicorn"),
                "bare_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(bare_port),
                *UVICORN_FLAGS,
            ],
            cwd=str(HERE),
            env={"BARE_ECHO_ADDR": f"127.0.0.1:{echo_port}"},
            name="bare",
        ),
    ]
    gateway, bare = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{bare_port}"
    try:
        for process in processes:
            process.start()
        await processes[0].wait_serving(f"127.0.0.1:{user_port}", 120)
        await processes[1].wait_serving(f"127.0.0.1:{product_port}", 120)
        await wait_http(gateway + "/readyz", processes[2])
        await wait_http(f"{bare}/docs", processes[4])

        async with httpx.AsyncClient(base_url=gateway, timeout=30) as api:
            email, password = f"bench.{run}@example.com", "bench-password-1"
            registered = await api.post(
                "/api/v1/register",
                json={"email": email, "password": password, "full_name": "Bench"},
            )
            registered.raise_for_status()
            token = await login(api, email, password)
            admin = await login(api, ADMIN_EMAIL, ADMIN_PASSWORD)
            created = await api.post(
                "/api/v1/products",
                headers={"Authorization": f"Bearer {admin}"},
                json={
                    "sku": f"BENCH-{run}",
                    "name": "Bench lamp",
                    "price_cents": 1999,
                    "stock": 42,
                    "description": "A product body of realistic size.",
                },
            )
            created.raise_for_status()
            product = created.json()

        login_lua = workdir / "login.lua"
        body = json.dumps({"email": email, "password": password})
        login_lua.write_text(f"BODY = {json.dumps(body)}\n{LOGIN_LUA}")
        d, c, n = args.duration, args.connections, args.runs
        auth = {"Authorization": f"Bearer {token}"}
        me_url, product_url = "/api/v1/users/me", f"/api/v1/products/{product['id']}"

        def median_pair(
            ours_url: str, ceiling_url: str, headers: dict[str, str]
        ) -> tuple[WrkResult, WrkResult]:
            ours, ceiling = [], []
            for _ in range(n):  # interleaved, so drift on the shared machine hits both alike
                ours.append(run_wrk(ours_url, duration=d, connections=c, headers=headers))
                ceiling.append(run_wrk(ceiling_url, duration=d, connections=c, headers=headers))
            return median_of(ours), median_of(ceiling)

        logins = run_wrk(gateway + "/api/v1/login", duration=d, connections=4, script=login_lua)
        me, echo = median_pair(gateway + me_url, bare + me_url, auth)
        hot, bare_product = median_pair(gateway + product_url, bare + product_url, {})
        load_after = os.getloadavg()
    finally:
        for process in processes:
            process.stop()
        await cleanup(server, databases, amqp_url, common)
        await delete_keys(redis_url, f"bench:{run}:")
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"### Gateway (`bench/gateway/bench_gateway.py`), {time.strftime('%Y-%m-%d %H:%M')}\n")
    print(
        f"wrk -t2 -c{c} -d{d}s --latency (login: 4 connections), median of {n} interleaved runs "
        f"per comparison; uvicorn {' '.join(UVICORN_FLAGS)}; argon2id "
        f"t={ARGON2['ARGON2_TIME_COST']} m={ARGON2['ARGON2_MEMORY_COST_KIB']}KiB "
        f"p={ARGON2['ARGON2_PARALLELISM']}; load average (1/5/15 min) before "
        f"{' / '.join(f'{v:.2f}' for v in load_before)}, after "
        f"{' / '.join(f'{v:.2f}' for v in load_after)}.\n"
    )
    print(
        "| scenario | req/s | p50 ms | p99 ms | non-2xx | ceiling | req/s ratio | p99 ratio |\n"
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
    )
    print(row("POST /api/v1/login, each request its own client address", logins))
    print(
        row(
            "GET /api/v1/users/me (JWT, 1 gRPC hop, service-user, PostgreSQL)",
            me,
            echo,
            "FastAPI to grpc.aio echo",
        )
    )
    print(row("GET /api/v1/products/{id}, hot micro-cache", hot, bare_product, "bare FastAPI"))
    print(row("ceiling: FastAPI to grpc.aio echo, same uvicorn flags", echo))
    print(row("ceiling: bare FastAPI, same uvicorn flags", bare_product))
    print(
        "\nGoals: product GET at least 80% of bare FastAPI with p99 at most 2x; /users/me at "
        "least 70% of the FastAPI to grpc.aio echo."
    )


async def login(api: httpx.AsyncClient, email: str, password: str) -> str:
    reply = await api.post("/api/v1/login", json={"email": email, "password": password})
    reply.raise_for_status()
    token: str = reply.json()["access_token"]
    return token


async def cleanup(server: str, databases: list[str], amqp_url: str, common: dict[str, str]) -> None:
    """Drop the databases, and the exchange and queues service-product declared."""
    connection = await asyncpg.connect(database_url(server, "postgres"), timeout=10)
    try:
        for name in databases:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
    broker = await aio_pika.connect(amqp_url, timeout=10)
    async with broker:
        channel = await broker.channel()
        exchange, prefix = common["EVENTS_EXCHANGE"], common["QUEUE_PREFIX"]
        for queue in (
            f"{prefix}service-product",
            f"{prefix}service-product.dlq",
            f"{exchange}.unrouted",
        ):
            await channel.queue_delete(queue)
        for name in (exchange, f"{exchange}.dlx", f"{exchange}.unrouted"):
            await channel.exchange_delete(name)


if __name__ == "__main__":
    started = time.monotonic()
    asyncio.run(main())
    print(f"(bench took {time.monotonic() - started:.0f} s)")
