"""Figures of issue 14 (the platform under abuse); prints them, asserts nothing.

large-token  HOST:PORT [--mb 16] [--seconds 5]
    /healthz latency on a gateway, idle and while 4 connections send
    `Authorization: Bearer <header>.<MB of base64>.AAAA` to GET /api/v1/cart in a loop.
login-burst  HOST:PORT PID [--logins 30]
    Concurrent Login calls with new emails (each from its own x-client-address) straight to
    service-user; codes, latency, and the process's resident memory before and at its peak.
platform     [--mb 16] [--seconds 5] [--logins 50]
    Both, against a service-user and a gateway this script starts (databases, Redis prefix of
    its own, removed at the end), printed as a Markdown table: /healthz under attack against
    /healthz idle (its ceiling), and the login burst.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import grpc

from chassis.postgres import database_url, ensure_database
from chassis.testing.process import ServiceProcess, free_port
from chassis.testing.redis_keys import delete_keys
from ecommerce.user.v1 import user_pb2, user_pb2_grpc


def healthz(host: str, port: int, until: float) -> list[float]:
    latencies = []
    connection = http.client.HTTPConnection(host, port, timeout=60)
    while time.monotonic() < until:
        started = time.perf_counter()
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        latencies.append(time.perf_counter() - started)
        time.sleep(0.02)
    return latencies


def attack(host: str, port: int, request: bytes, until: float) -> None:
    while time.monotonic() < until:
        try:
            with socket.create_connection((host, port), timeout=60) as sock:
                sock.sendall(request)
                sock.recv(64)
        except OSError:
            pass


def describe(latencies: list[float]) -> str:
    ms = sorted(value * 1000 for value in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"median {statistics.median(ms):7.1f} ms  p99 {p99:7.1f} ms  max {ms[-1]:7.1f} ms"


def large_token_latencies(
    address: str, megabytes: int, seconds: float
) -> tuple[list[float], list[float]]:
    """/healthz latencies idle, then while 4 connections send large tokens."""
    host, port = address.rsplit(":", 1)
    token = b"eyJhbGciOiJFZERTQSIsImtpZCI6ImsifQ." + b"A" * (megabytes << 20) + b".AAAA"
    request = (
        b"GET /api/v1/cart HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + token + b"\r\n\r\n"
    )
    idle = healthz(host, int(port), time.monotonic() + seconds)
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=attack, args=(host, int(port), request, until)) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    attacked = healthz(host, int(port), until)
    for thread in threads:
        thread.join()
    return idle, attacked


def large_token(address: str, megabytes: int, seconds: float) -> None:
    idle, attacked = large_token_latencies(address, megabytes, seconds)
    print(f"/healthz idle                      {describe(idle)}")
    print(f"/healthz under 4 x {megabytes:>2} MB tokens     {describe(attacked)}")


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


async def burst(address: str, logins: int) -> list[tuple[str, float]]:
    """Concurrent logins with new emails, each from its own client address: (code, seconds)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)

        async def one(n: int) -> tuple[str, float]:
            started = time.perf_counter()
            request = user_pb2.LoginRequest(email=f"b-{uuid.uuid4().hex}@example.com", password="x")
            try:
                metadata = (("x-client-address", f"10.9.{n // 250}.{n % 250}"),)
                await stub.Login(request, metadata=metadata, timeout=3)
                code = "OK"
            except grpc.aio.AioRpcError as error:
                code = error.code().name
            return code, time.perf_counter() - started

        return list(await asyncio.gather(*(one(n) for n in range(logins))))


async def login_burst(address: str, pid: int, logins: int) -> None:
    rss_before = memory_kib(pid, "VmRSS")
    results = await burst(address, logins)
    peak = memory_kib(pid, "VmHWM")
    for code, count in sorted(Counter(code for code, _ in results).items()):
        times = [t for c, t in results if c == code]
        print(f"{code:18} {count:4}  median {statistics.median(times) * 1000:7.1f} ms")
    print(f"RSS before {rss_before / 1024:6.0f} MiB, peak {peak / 1024:6.0f} MiB")


async def on_own_platform(megabytes: int, seconds: float, logins: int) -> None:
    """Start service-user (default argon2 cost) and a gateway, measure both scenarios, print."""
    run = uuid.uuid4().hex[:8]
    server = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
    database = f"bench_{run}_users"
    await ensure_database(server, database)
    workdir = Path(tempfile.mkdtemp(prefix="bench-abuse-"))
    user_port, gateway_port = free_port(), free_port()
    bin_dir = Path(sys.executable).parent
    users = ServiceProcess(
        [str(bin_dir / "service-user")],
        name="service-user",
        env={
            "POSTGRES_URL": server,
            "USER_DB_NAME": database,
            "USER_GRPC_PORT": str(user_port),
            "USER_METRICS_PORT": "0",
            "REDIS_KEY_PREFIX": f"bench:{run}:users:",
            "JWT_PRIVATE_KEY_FILE": str(workdir / "jwt.pem"),
        },
    )
    gateway = ServiceProcess(
        [str(bin_dir / "api-gateway")],
        name="api-gateway",
        env={
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(gateway_port),
            "GATEWAY_METRICS_PORT": "0",
            "USER_SERVICE_ADDR": "",  # the large token never needs an upstream
            "PRODUCT_SERVICE_ADDR": "",
            "CART_SERVICE_ADDR": "",
            "ORDER_SERVICE_ADDR": "",
        },
    )
    try:
        users.start()
        gateway.start()
        await users.wait_serving(f"127.0.0.1:{user_port}", 120)
        for _ in range(600):
            try:
                if http_ok(f"127.0.0.1:{gateway_port}"):
                    break
            except OSError:
                await asyncio.sleep(0.1)
        idle, attacked = await asyncio.to_thread(
            large_token_latencies, f"127.0.0.1:{gateway_port}", megabytes, seconds
        )
        gateway_rss = memory_kib(gateway.pid, "VmRSS") / 1024
        rss_before = memory_kib(users.pid, "VmRSS") / 1024
        results = await burst(f"127.0.0.1:{user_port}", logins)
        peak = memory_kib(users.pid, "VmHWM") / 1024
    finally:
        users.stop()
        gateway.stop()
        await drop_database(server, database)
        # The login throttle's counters of the burst.
        await delete_keys(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), f"bench:{run}:")
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"### Abuse (`bench/abuse/bench_abuse.py platform`), {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| scenario | median ms | p99 ms | ceiling | ratio |\n| --- | ---: | ---: | --- | ---: |")
    idle_ms, attacked_ms = percentiles(idle), percentiles(attacked)
    print(f"| /healthz idle | {idle_ms[0]:.1f} | {idle_ms[1]:.1f} | - | - |")
    print(
        f"| /healthz under 4 connections of {megabytes} MB tokens | {attacked_ms[0]:.1f} "
        f"| {attacked_ms[1]:.1f} | idle: {idle_ms[0]:.1f} ms | {attacked_ms[0] / idle_ms[0]:.1f}x |"
    )
    codes = Counter(code for code, _ in results)
    medians = {code: statistics.median(t for c, t in results if c == code) for code in codes}
    answers = ", ".join(
        f"{count} x {code} (median {medians[code] * 1000:.0f} ms)"
        for code, count in sorted(codes.items())
    )
    print(f"\n- {logins} concurrent logins with new emails (argon2 at its default cost): {answers}")
    print(f"- service-user resident memory {rss_before:.0f} MiB before, {peak:.0f} MiB at peak")
    print(f"- gateway resident memory after the large tokens: {gateway_rss:.0f} MiB")


def http_ok(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=2)
    connection.request("GET", "/healthz")
    return connection.getresponse().status == 200


def percentiles(latencies: list[float]) -> tuple[float, float]:
    ms = sorted(value * 1000 for value in latencies)
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]


async def drop_database(server: str, name: str) -> None:
    conn = await asyncpg.connect(database_url(server, "postgres"), timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("large-token")
    token.add_argument("address")
    token.add_argument("--mb", type=int, default=16)
    token.add_argument("--seconds", type=float, default=5.0)
    bursting = commands.add_parser("login-burst")
    bursting.add_argument("address")
    bursting.add_argument("pid", type=int)
    bursting.add_argument("--logins", type=int, default=30)
    platform = commands.add_parser("platform")
    platform.add_argument("--mb", type=int, default=16)
    platform.add_argument("--seconds", type=float, default=5.0)
    platform.add_argument("--logins", type=int, default=50)
    args = parser.parse_args()
    if args.command == "large-token":
        large_token(args.address, args.mb, args.seconds)
    elif args.command == "platform":
        asyncio.run(on_own_platform(args.mb, args.seconds, args.logins))
    else:
        asyncio.run(login_burst(args.address, args.pid, args.logins))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
