"""Typed domain errors and their gRPC status, with the standard rich details in the
`grpc-status-details-bin` trailer: the offending field as a google.rpc.BadRequest, and when to
try again as a google.rpc.RetryInfo."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


class DomainError(Exception):
    """A rule of the domain was broken; the subclass says which gRPC status the caller sees."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after_seconds = retry_after_seconds

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        """The rich status trailer; only an error naming a field or a retry delay carries one."""
        details: list[any_pb2.Any] = []
        if self.field is not None:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=self.field, description=self.message
            )
            details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
        if self.retry_after_seconds is not None:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromMilliseconds(max(0, round(self.retry_after_seconds * 1000)))
            details.append(_packed(retry))
        if not details:
            return ()
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        return ((STATUS_DETAILS_KEY, status.SerializeToString()),)


def _packed(message: Message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


def _status_details(error: Any) -> status_pb2.Status | None:
    metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None


def violations_of(error: grpc.RpcError) -> list[tuple[str, str]]:
    """Client side: every (field, description) named by the BadRequest details, in order."""
    status = _status_details(error)
    if status is None:
        return []
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend((v.field, v.description) for v in bad_request.field_violations)
    return violations


def retry_delay_of(error: grpc.RpcError) -> float | None:
    """Client side: the seconds the server asked to wait before trying again (its RetryInfo),
    or None when it did not say."""
    status = _status_details(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            return float(retry.retry_delay.ToTimedelta().total_seconds())
    return None


def retry_after_of(error: grpc.RpcError) -> int | None:
    """Client side: the server's RetryInfo as an HTTP `Retry-After` (whole seconds, rounded up so
    that a caller coming back then is not refused once more; at least 1), or None."""
    delay = retry_delay_of(error)
    if delay is None or not math.isfinite(delay):
        return None
    return max(1, math.ceil(delay))


def field_of(error: grpc.RpcError) -> str | None:
    """Client side: the field named by an INVALID_ARGUMENT, or None."""
    violations = violations_of(error)
    return violations[0][0] if violations else None
