"""The one place where failures become RFC 9457 problem+json responses.

gRPC status codes, request validation errors and HTTP exceptions all end here; nothing
internal (stack traces, upstream addresses, exception text) ever reaches a client. An upstream's
`google.rpc.RetryInfo` (when a throttle lets the caller try again) becomes `Retry-After`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import grpc
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from api_gateway.upstreams import UpstreamNotConfigured
from chassis.errors import field_of, retry_after_of
from chassis.logging import get_logger

log = get_logger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

HTTP_STATUS_BY_GRPC_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# Upstream messages for these codes are written for end users; for the others (transport
# failures, INTERNAL, UNKNOWN) the text may name hosts or internals, so a fixed one is sent.
_TRUSTED_DETAIL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
_FIXED_DETAIL = {
    503: "an upstream service is unavailable, retry later",
    504: "an upstream service did not answer in time",
    500: "internal error",
}
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})
# A throttled caller (429, RFC 6585) is told when to come back, as RFC 9110's Retry-After.
_THROTTLED = 429
RETRY_AFTER_DESCRIPTION = (
    "Whole seconds until the caller may try again, when the service that refused knows it "
    "(the login throttle and the per-client limits do)."
)


class FieldProblem(BaseModel):
    """One invalid input field."""

    field: str = Field(examples=["email"])
    message: str = Field(examples=["value is not a valid email address"])


class Problem(BaseModel):
    """RFC 9457 problem details, served as application/problem+json."""

    type: str = Field("about:blank", examples=["about:blank"])
    title: str = Field(examples=["Unprocessable Content"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["request validation failed"])
    errors: list[FieldProblem] | None = Field(
        None, description="Present on validation problems: one entry per invalid field."
    )
    retry_after_seconds: int | None = Field(
        None,
        ge=0,
        examples=[840],
        description="Present on a 429 when it is known: the same seconds as its `Retry-After` "
        "header. " + RETRY_AFTER_DESCRIPTION,
    )


def problem_response(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    retry_after_seconds: int | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    if retry_after_seconds is not None:
        body["retry_after_seconds"] = retry_after_seconds
        headers = {**(headers or {}), "Retry-After": str(retry_after_seconds)}
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def unauthorized(detail: str) -> Response:
    return problem_response(401, detail, headers={"WWW-Authenticate": "Bearer"})


def problem_from_rpc_error(error: grpc.aio.AioRpcError) -> Response:
    code = error.code()
    status = HTTP_STATUS_BY_GRPC_CODE.get(code, 500)
    if code not in _TRUSTED_DETAIL_CODES:
        log.warning(
            "upstream_call_failed",
            grpc_code=code.name,
            http_status=status,
            upstream_detail=str(error.details()),
        )
        return problem_response(status, _FIXED_DETAIL.get(status, "internal error"))
    detail = error.details() or HTTPStatus(status).phrase
    if status == 422:
        field = field_of(error) or "body"
        return problem_response(status, detail, errors=[{"field": field, "message": detail}])
    if status == 401:
        return unauthorized(detail)
    retry_after = retry_after_of(error) if status == _THROTTLED else None
    return problem_response(status, detail, retry_after_seconds=retry_after)


def _field_name(location: tuple[int | str, ...]) -> str:
    parts = [str(part) for part in location]
    if len(parts) > 1 and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return ".".join(parts) or "body"


def _required_body_fields(request: Request) -> list[str]:
    """The required fields of the JSON body the request's route takes (none without one)."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(body_field, "field_info", None), "annotation", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [name for name, field in model.model_fields.items() if field.is_required()]


def validation_problem(exc: RequestValidationError, *, body_fields: Sequence[str] = ()) -> Response:
    """`body_fields`: the required fields of the route's body, each named when no body came
    (a client that sends none learns what it misses, e.g. the checkout's `payment_token`)."""
    errors: list[dict[str, str]] = []
    for error in exc.errors():
        location = tuple(error.get("loc", ()))
        if location == ("body",) and error.get("type") == "missing" and body_fields:
            errors.extend({"field": name, "message": "Field required"} for name in body_fields)
            continue
        field = "body" if error.get("type") == "json_invalid" else _field_name(location)
        errors.append({"field": field, "message": str(error.get("msg", "invalid value"))})
    return problem_response(422, "request validation failed", errors=errors)


async def _on_rpc_error(_request: Request, exc: Exception) -> Response:
    if not isinstance(exc, grpc.aio.AioRpcError):  # registered for that type only
        raise TypeError(type(exc).__name__)
    return problem_from_rpc_error(exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):  # registered for that type only
        raise TypeError(type(exc).__name__)
    return validation_problem(exc, body_fields=_required_body_fields(request))


async def _on_http_exception(_request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):  # registered for that type only
        raise TypeError(type(exc).__name__)
    if exc.status_code == 204 or exc.status_code == 304:
        return Response(status_code=exc.status_code, headers=exc.headers)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem_response(exc.status_code, detail, headers=exc.headers)


async def _on_upstream_not_configured(_request: Request, exc: Exception) -> Response:
    return problem_response(503, f"{exc} is not configured on this gateway")


async def _on_unexpected_error(_request: Request, exc: Exception) -> Response:
    log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    return problem_response(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(grpc.aio.AioRpcError, _on_rpc_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(UpstreamNotConfigured, _on_upstream_not_configured)
    app.add_exception_handler(Exception, _on_unexpected_error)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the problem answers of a route; 500 is always
    one of them (an upstream INTERNAL or UNKNOWN status, or a bug, ends there). A 429 documents
    the `Retry-After` it may carry."""
    ref = {"$ref": "#/components/schemas/Problem"}
    entries: dict[int | str, dict[str, Any]] = {}
    for status in (*statuses, 500):
        entry: dict[str, Any] = {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": ref}},
        }
        if status == _THROTTLED:
            entry["headers"] = {
                "Retry-After": {
                    "description": RETRY_AFTER_DESCRIPTION,
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                }
            }
        entries[status] = entry
    return entries


def problems_only_as_problem_json(document: dict[str, Any]) -> dict[str, Any]:
    """Drop the `application/json` twin FastAPI adds to every response with a `model`: problem
    answers are only ever served as application/problem+json, and the document must say so."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if PROBLEM_MEDIA_TYPE in content:
                    content.pop("application/json", None)
    return document
