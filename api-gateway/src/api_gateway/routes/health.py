"""Operational endpoints: liveness, readiness (upstream gRPC health) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from api_gateway.deps import UpstreamsDep
from api_gateway.errors import problem_response, problems

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Every configured upstream answers gRPC health SERVING",
    responses=problems(503),
)
async def readyz(request: Request, upstreams: UpstreamsDep) -> Response:
    deadline = request.app.state.settings.readiness_timeout_seconds
    down = await upstreams.not_serving(deadline)
    if down:
        return problem_response(503, "not serving: " + ", ".join(down))
    return Response(b'{"status":"ready"}', media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
