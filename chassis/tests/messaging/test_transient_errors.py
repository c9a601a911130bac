"""Which errors a consumer treats as a dependency being down (retried later, never
dead-lettered), and that deciding it costs a service without Redis no import of redis."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import grpc
import redis.exceptions

from chassis.errors import Unavailable
from chassis.messaging import PoisonMessage, is_transient
from chassis.messaging.broker import BrokerUnavailable


def test_a_dependency_that_is_down_is_transient_and_a_bad_event_is_not() -> None:
    assert is_transient(Unavailable("service-product is down"))
    assert is_transient(BrokerUnavailable("no connection"))
    assert is_transient(redis.exceptions.ConnectionError("refused"))
    assert is_transient(redis.exceptions.TimeoutError("no answer"))
    assert is_transient(ConnectionRefusedError())
    assert is_transient(asyncpg.exceptions.CannotConnectNowError())
    assert not is_transient(PoisonMessage("order_id is not a UUID"))
    assert not is_transient(redis.exceptions.ResponseError("WRONGTYPE"))
    assert not is_transient(ValueError("a bug"))
    assert not is_transient(grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, None, None))
    assert is_transient(grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, None, None))


def test_a_consumer_loads_no_redis_in_a_service_that_does_not_use_it() -> None:
    probe = (
        "import sys; from chassis.messaging import is_transient; "
        "assert not is_transient(ValueError()); print('redis' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
