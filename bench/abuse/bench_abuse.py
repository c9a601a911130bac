"""Figures of issue 14 (the platform under abuse); prints them, asserts nothing.

large-token  HOST:PORT [--mb 16] [--seconds 5]
    /healthz latency on a gateway, idle and while 4 connections send
    `Authorization: Bearer <header>.<MB of base64>.AAAA` to GET /api/v1/cart in a loop.
login-burst  HOST:PORT PID [--logins 30]
    Concurrent Login calls with new emails (each from its own x-client-address) straight to
    service-user; codes, latency, and the process's resident memory before and at its peak.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import socket
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc

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


def large_token(address: str, megabytes: int, seconds: float) -> None:
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
    print(f"/healthz idle                      {describe(idle)}")
    print(f"/healthz under 4 x {megabytes:>2} MB tokens     {describe(attacked)}")


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


async def login_burst(address: str, pid: int, logins: int) -> None:
    rss_before = memory_kib(pid, "VmRSS")
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

        results = await asyncio.gather(*(one(n) for n in range(logins)))
    peak = memory_kib(pid, "VmHWM")
    for code, count in sorted(Counter(code for code, _ in results).items()):
        times = [t for c, t in results if c == code]
        print(f"{code:18} {count:4}  median {statistics.median(times) * 1000:7.1f} ms")
    print(f"RSS before {rss_before / 1024:6.0f} MiB, peak {peak / 1024:6.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("large-token")
    token.add_argument("address")
    token.add_argument("--mb", type=int, default=16)
    token.add_argument("--seconds", type=float, default=5.0)
    burst = commands.add_parser("login-burst")
    burst.add_argument("address")
    burst.add_argument("pid", type=int)
    burst.add_argument("--logins", type=int, default=30)
    args = parser.parse_args()
    if args.command == "large-token":
        large_token(args.address, args.mb, args.seconds)
    else:
        asyncio.run(login_burst(args.address, args.pid, args.logins))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
