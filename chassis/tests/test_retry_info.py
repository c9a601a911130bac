"""Retry advice travels as google.rpc.RetryInfo in the status details and reads back as whole
seconds for Retry-After."""

from __future__ import annotations

import grpc
import pytest

from chassis.errors import Unavailable, retry_after_of


def refused(trailing: tuple[tuple[str, bytes], ...]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*trailing),
        details="paused",
    )


@pytest.mark.parametrize(("seconds", "header"), [(2, 2), (2.5, 3), (0.2, 1), (0, 1)])
def test_the_advised_delay_reads_back_in_whole_seconds_rounded_up(
    seconds: float, header: int
) -> None:
    refusal = Unavailable("paused", retry_after_seconds=seconds)

    assert refusal.code == grpc.StatusCode.UNAVAILABLE
    assert retry_after_of(refused(refusal.trailing_metadata())) == header


def test_a_status_without_retry_advice_has_none() -> None:
    assert retry_after_of(refused(())) is None
