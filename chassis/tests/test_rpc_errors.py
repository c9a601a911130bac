"""The server interceptor: domain errors become their gRPC status (with the field for
INVALID_ARGUMENT), anything else becomes INTERNAL without leaking details."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from chassis import errors
from chassis.errors import field_of, retry_delay_of, violations_of

SAMPLE = "/chassis.sample.Sample/"


async def call(address: str, method: str, request: bytes = b"") -> bytes:
    async with grpc.aio.insecure_channel(address) as channel:
        reply: bytes = await channel.unary_unary(SAMPLE + method)(request, timeout=5)
        return reply


async def test_invalid_argument_carries_the_offending_field_to_the_client(sample_server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call(sample_server.address, "Reject")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details() == "email is not an address"
    assert field_of(failure.value) == "email"
    assert violations_of(failure.value) == [("email", "email is not an address")]
    assert retry_delay_of(failure.value) is None


@pytest.mark.parametrize(
    ("error_class", "code"),
    [
        ("InvalidArgument", grpc.StatusCode.INVALID_ARGUMENT),
        ("NotFound", grpc.StatusCode.NOT_FOUND),
        ("AlreadyExists", grpc.StatusCode.ALREADY_EXISTS),
        ("FailedPrecondition", grpc.StatusCode.FAILED_PRECONDITION),
        ("Unauthenticated", grpc.StatusCode.UNAUTHENTICATED),
        ("PermissionDenied", grpc.StatusCode.PERMISSION_DENIED),
        ("ResourceExhausted", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("Unavailable", grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_each_domain_error_becomes_its_status(sample_server, error_class, code) -> None:
    assert getattr(errors, error_class).code == code
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call(sample_server.address, "Raise", error_class.encode())
    assert failure.value.code() == code
    assert failure.value.details() == "the rule says no"
    assert field_of(failure.value) is None


async def test_a_retry_delay_reaches_the_client_as_the_standard_retry_info(sample_server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call(sample_server.address, "Throttle")
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failure.value.details() == "slow down"
    assert retry_delay_of(failure.value) == 42.5
    assert field_of(failure.value) is None


def test_a_field_and_a_retry_delay_travel_together_in_one_status() -> None:
    error = errors.Unavailable("busy", field="email", retry_after_seconds=-3)
    [(key, value)] = error.trailing_metadata()
    status = status_pb2.Status.FromString(value)
    assert (key, status.code, status.message) == (
        errors.STATUS_DETAILS_KEY,
        grpc.StatusCode.UNAVAILABLE.value[0],
        "busy",
    )
    kinds = [detail.TypeName() for detail in status.details]
    assert kinds == ["google.rpc.BadRequest", "google.rpc.RetryInfo"]
    retry = error_details_pb2.RetryInfo()
    status.details[1].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 0  # a negative delay is "now", never negative


async def test_unexpected_exception_is_internal_and_logged_but_never_sent(sample_server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call(sample_server.address, "Crash")
    assert failure.value.code() == grpc.StatusCode.INTERNAL
    assert failure.value.details() == "internal error"
    assert "hunter2" not in str(failure.value.debug_error_string())
    failed = sample_server.process.wait_for_log("rpc_failed", method=SAMPLE + "Crash")
    assert failed["level"] == "error"
    assert "RuntimeError: database password is hunter2" in failed["exception"]


def test_domain_error_without_field_sends_no_status_details() -> None:
    assert errors.NotFound("no such product").trailing_metadata() == ()
    assert errors.InvalidArgument("bad", field="price_cents").field == "price_cents"
