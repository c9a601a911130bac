"""A tiny service built on ServiceRuntime, used by the chassis tests in-process and as a subprocess.

Methods (raw bytes, generic handler) of `chassis.sample.Sample`: Slow sleeps the number of
milliseconds in the request, Reject raises InvalidArgument on field `email`, Raise raises the
chassis.errors class named in the request, Throttle raises ResourceExhausted asking to wait 42.5 s,
Crash raises a plain exception, Whisper logs secrets.
Startup connects to SAMPLE_POSTGRES_URL when set; readiness needs the file SAMPLE_READY_FILE."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import grpc
from pydantic import Field

from chassis import errors
from chassis.grpc_server import ServiceRuntime, run
from chassis.logging import get_logger
from chassis.settings import ServiceSettings, load_settings

SERVICE = "chassis.sample.Sample"
log = get_logger("sample")


class SampleSettings(ServiceSettings):
    service_name = "sample-service"
    grpc_port: int = Field(validation_alias="SAMPLE_GRPC_PORT", ge=0, le=65535)
    ready_file: str = Field("", validation_alias="SAMPLE_READY_FILE")
    postgres_url: str = Field("", validation_alias="SAMPLE_POSTGRES_URL")


async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    log.info("slow_started")
    await asyncio.sleep(int(request or b"0") / 1000)
    return b"done"


async def reject(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise errors.InvalidArgument("email is not an address", field="email")


async def raise_named(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise getattr(errors, request.decode())("the rule says no")


async def throttle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise errors.ResourceExhausted("slow down", retry_after_seconds=42.5)


async def crash(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RuntimeError("database password is hunter2")


async def whisper(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    log.info("whispered", password=request.decode(), profile={"jwt": request.decode()})
    return b"ok"


def generic_handler() -> grpc.GenericRpcHandler:
    methods = {
        "Slow": slow,
        "Reject": reject,
        "Raise": raise_named,
        "Throttle": throttle,
        "Crash": crash,
        "Whisper": whisper,
    }
    return grpc.method_handlers_generic_handler(
        SERVICE, {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()}
    )


def build(settings: SampleSettings) -> ServiceRuntime:
    runtime = ServiceRuntime(settings)
    runtime.add_servicer(
        lambda handler, server: server.add_generic_rpc_handlers((handler,)),
        generic_handler(),
        SERVICE,
    )

    async def ready_file_exists() -> None:
        if settings.ready_file and not await asyncio.to_thread(os.path.exists, settings.ready_file):
            raise FileNotFoundError(settings.ready_file)

    async def connect_postgres() -> None:
        conn = await asyncpg.connect(settings.postgres_url, timeout=2)
        await conn.close()

    if settings.postgres_url:
        runtime.on_startup("postgres", connect_postgres)
    runtime.readiness_check("ready-file", ready_file_exists)
    return runtime


async def main() -> None:
    await build(load_settings(SampleSettings)).run()


if __name__ == "__main__":
    run(main)
