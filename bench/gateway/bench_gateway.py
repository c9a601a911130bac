"""Gateway benchmark: login and /users/me (argon2 cost included), GET /api/v1/products/{id}
with a hot micro-cache, and a bare FastAPI endpoint served the same way, with the ratio.

Starts service-user, service-product and the gateway as local processes against the Postgres
and Redis named by POSTGRES_URL / REDIS_URL (localhost defaults), in databases `bench_<id>_*`
dropped at the end. Needs `wrk` (Debian: apt-get install -y wrk). Prints figures, asserts nothing.

    uv run python bench/gateway/bench_gateway.py --duration 10 --runs 3 --connections 64
"""

from __future__ import annotations

import argparse
import asyncio
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

import asyncpg
import httpx

from chassis.postgres import database_url, ensure_database
from chassis.testing.process import ServiceProcess, free_port

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


def row(name: str, result: WrkResult) -> str:
    return (
        f"| {name} | {result.requests_per_second:,.0f} | {result.p50_ms:.2f} | "
        f"{result.p99_ms:.2f} | {result.non_2xx} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="runs of the product comparison")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")

    server = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    run = uuid.uuid4().hex[:8]
    databases = [f"bench_{run}_users", f"bench_{run}_products"]
    for name in databases:
        await ensure_database(server, name)
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    user_port, product_port, gw_port, bare_port = (free_port() for _ in range(4))
    common = {"POSTGRES_URL": server, "REDIS_URL": redis_url}
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
            env={
                **common,
                "PRODUCT_DB_NAME": databases[1],
                "PRODUCT_GRPC_PORT": str(product_port),
                "PRODUCT_METRICS_PORT": "0",
                "REDIS_KEY_PREFIX": f"bench:{run}:products:",
            },
        ),
        ServiceProcess(
            [str(BIN / "api-gateway")],
            name="api-gateway",
            env={
                **common,
                "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(gw_port),
                "USER_SERVICE_ADDR": f"127.0.0.1:{user_port}",
                "PRODUCT_SERVICE_ADDR": f"127.0.0.1:{product_port}",
                "CART_SERVICE_ADDR": "",
                "ORDER_SERVICE_ADDR": "",
            },
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
            name="bare",
        ),
    ]
    gateway = f"http://127.0.0.1:{gw_port}"
    try:
        for process in processes:
            process.start()
        await processes[0].wait_serving(f"127.0.0.1:{user_port}", 120)
        await processes[1].wait_serving(f"127.0.0.1:{product_port}", 120)
        await wait_http(gateway + "/readyz", processes[2])
        await wait_http(f"http://127.0.0.1:{bare_port}/docs", processes[3])

        async with httpx.AsyncClient(base_url=gateway, timeout=30) as api:
            email, password = f"bench.{run}@example.com", "bench-password-1"
            await api.post(
                "/api/v1/register",
                json={"email": email, "password": password, "full_name": "Bench"},
            )
            token = (
                await api.post("/api/v1/login", json={"email": email, "password": password})
            ).json()["access_token"]
            admin = (
                await api.post(
                    "/api/v1/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
                )
            ).json()["access_token"]
            product = (
                await api.post(
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
            ).json()

        login_lua = workdir / "login.lua"
        login_lua.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.body = \'{{"email": "{email}", "password": "{password}"}}\'\n'
        )
        d, c = args.duration, args.connections
        print(
            f"wrk -t2 -c{c} -d{d}s; uvicorn {' '.join(UVICORN_FLAGS)}; "
            f"argon2id t={ARGON2['ARGON2_TIME_COST']} m={ARGON2['ARGON2_MEMORY_COST_KIB']}KiB "
            f"p={ARGON2['ARGON2_PARALLELISM']}; load average {os.getloadavg()[0]:.1f}"
        )
        print(
            "| scenario | req/s | p50 ms | p99 ms | non-2xx |\n| --- | ---: | ---: | ---: | ---: |"
        )
        print(
            row(
                "POST /api/v1/login (4 conns)",
                run_wrk(gateway + "/api/v1/login", duration=d, connections=4, script=login_lua),
            ),
            flush=True,
        )
        print(
            row(
                "GET /api/v1/users/me",
                run_wrk(
                    gateway + "/api/v1/users/me",
                    duration=d,
                    connections=c,
                    headers={"Authorization": f"Bearer {token}"},
                ),
            ),
            flush=True,
        )
        product_url = f"/api/v1/products/{product['id']}"
        ours, bare = [], []
        for _ in range(args.runs):
            ours.append(run_wrk(gateway + product_url, duration=d, connections=c))
            bare.append(
                run_wrk(f"http://127.0.0.1:{bare_port}{product_url}", duration=d, connections=c)
            )
        gw, ceiling = median_of(ours), median_of(bare)
        print(row(f"GET /api/v1/products/{{id}}, hot cache (median of {args.runs})", gw))
        print(row(f"bare FastAPI, same uvicorn flags (median of {args.runs})", ceiling))
        print(f"\ngateway / bare = {gw.requests_per_second / ceiling.requests_per_second:.0%}")
    finally:
        for process in processes:
            process.stop()
        connection = await asyncpg.connect(database_url(server, "postgres"), timeout=10)
        try:
            for name in databases:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    started = time.monotonic()
    asyncio.run(main())
    print(f"(bench took {time.monotonic() - started:.0f} s)")
