"""Operational endpoints: liveness and readiness (upstream gRPC health). Prometheus metrics are
served on their own port (GATEWAY_METRICS_PORT), not here."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from api_gateway.deps import UpstreamsDep
from api_gateway.errors import problem_response, problems

router = APIRouter(tags=["operations"])


class Drain:
    """Whether this process is draining: set once by the entry point on SIGTERM
    (api_gateway.main.DrainingServer); from then on /readyz answers 503 while every other route
    is still served, so the balancer in front moves new requests to the other gateways."""

    def __init__(self) -> None:
        self.draining = False

    def begin(self) -> None:
        self.draining = True


DRAIN = Drain()


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Every configured upstream answers gRPC health SERVING, and no shutdown has begun",
    responses=problems(503),
)
async def readyz(request: Request, upstreams: UpstreamsDep) -> Response:
    if DRAIN.draining:
        return problem_response(503, "draining: this gateway is shutting down")
    deadline = request.app.state.settings.readiness_timeout_seconds
    down = await upstreams.not_serving(deadline)
    if down:
        return problem_response(503, "not serving: " + ", ".join(down))
    return Response(b'{"status":"ready"}', media_type="application/json")
