"""`ServiceProcess`: run a service as a real subprocess, collect its (JSON) log lines, wait until
its gRPC health answers SERVING, signal it and read its exit code."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import IO, Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Ports handed to services come from below the kernel's ephemeral range (32768-60999 by default),
# so no outgoing connection can take one between the test choosing it and the service binding it,
# and each xdist worker draws from a block of its own, so no other worker chooses it either.
_PORT_BLOCK = 1500
_PORT_BASE = 15000
_next_port: dict[int, int] = {}


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return int(worker) % 10 if worker.isdigit() else 0


def free_port() -> int:
    """A TCP port free right now, from this worker's own block (for services that must be told
    their port): walked in turn, so a port a stopped service just left is not handed out again
    at once."""
    first = _PORT_BASE + _worker_index() * _PORT_BLOCK
    for _ in range(_PORT_BLOCK):
        port = _next_port.get(first, first)
        _next_port[first] = first + (port + 1 - first) % _PORT_BLOCK
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{first + _PORT_BLOCK - 1}")


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_this_process() -> Callable[[], None] | None:
    """A pre-exec hook making the kernel SIGTERM the child when this process dies (Linux only).

    Without it, a test runner killed by a timeout or CI leaves its services running for ever,
    holding ports and connections to the shared servers. The kernel ties the signal to the thread
    that forks, so it is only armed from the main thread (which lives as long as the runner).
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: the hook only calls
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the runner died before the signal was armed
            os._exit(1)

    return hook


class ServiceProcess:
    """A subprocess whose stdout and stderr lines are collected by reader threads."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        cwd: str | None = None,
        name: str | None = None,
    ) -> None:
        self.args = list(args)
        self.env = {**(os.environ if inherit_env else {}), **(env or {})}
        self.cwd = cwd
        self.name = name or os.path.basename(self.args[0])
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._popen: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []

    def start(self) -> Self:
        if self._popen is not None:
            raise RuntimeError(f"{self.name} was already started")
        self._popen = subprocess.Popen(  # noqa: S603 - the test chose argv; no shell
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            # Safe despite the reader threads: the hook only makes two system calls.
            preexec_fn=_die_with_this_process(),
        )
        for stream, sink in (
            (self._popen.stdout, self.stdout_lines),
            (self._popen.stderr, self.stderr_lines),
        ):
            reader = threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    @staticmethod
    def _read(stream: IO[str] | None, sink: list[str]) -> None:
        if stream is None:
            return
        for line in stream:
            sink.append(line.rstrip("\n"))

    @property
    def popen(self) -> subprocess.Popen[str]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def logs(self) -> list[dict[str, Any]]:
        """The stdout lines that are JSON objects (the structured log events), in order."""
        events = []
        for line in list(self.stdout_lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def output_tail(self, lines: int = 30) -> str:
        return "\n".join([*self.stdout_lines[-lines:], *self.stderr_lines[-lines:]])

    def wait_for_log(self, event: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The first log event named `event` (with the given field values), waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.logs():
                if entry.get("event") == event and all(
                    entry.get(k) == v for k, v in fields.items()
                ):
                    return entry
            if self.returncode is not None or time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {event!r} log line\n{self.output_tail()}")
            time.sleep(0.05)

    def _check_alive(self, what: str) -> None:
        if self.returncode is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.returncode} while {what}\n{self.output_tail()}"
            )

    async def wait_serving(self, address: str, timeout_s: float = 30.0, service: str = "") -> None:
        """Poll grpc.health.v1 Check until `service` is SERVING; fail fast if the process dies."""
        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                self._check_alive("waiting for SERVING")
                try:
                    reply = await stub.Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=1.0
                    )
                    status: int | None = reply.status
                except grpc.aio.AioRpcError:
                    status = None  # not listening yet: keep polling until the deadline
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.name} not SERVING on {address}\n{self.output_tail()}"
                    )
                await asyncio.sleep(0.1)

    def send_signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def terminate(self) -> None:
        """SIGTERM: the graceful stop."""
        if self.returncode is None:
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.returncode is None:
            self.popen.kill()

    def wait(self, timeout: float = 30.0) -> int:
        code = self.popen.wait(timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def stop(self, timeout: float = 15.0) -> int:
        """Terminate and wait; kill if it does not exit within `timeout`."""
        self.terminate()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.wait(timeout)

    def __enter__(self) -> Self:
        # `with ServiceProcess(...).start():` is as natural as `with ServiceProcess(...):`; the
        # block must not start a second process and orphan the first.
        return self if self._popen is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._popen is not None:
            self.stop()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._popen is not None:
            await asyncio.to_thread(self.stop)
