"""Operational endpoints: liveness and readiness (upstream gRPC health). Prometheus metrics are
served on their own port (GATEWAY_METRICS_PORT), not here."""

from __future__ import annotations

from fastapi import APIRouter, Request
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
