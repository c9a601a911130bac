"""`python -m chassis.health_probe HOST:PORT [SERVICE]`: exit 0 when gRPC health answers SERVING
within 2 seconds, 1 otherwise (container healthchecks use it in place of grpc_health_probe)."""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEADLINE_S = 2.0


def probe(address: str, service: str = "", deadline_s: float = DEADLINE_S) -> bool:
    """True when `service` ("" = the whole server) reports SERVING at `address`."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=deadline_s,
                wait_for_ready=True,
            )
        except grpc.RpcError as error:
            sys.stderr.write(f"{address}: {error.code().name}\n")
            return False
    status_name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        sys.stderr.write(f"{address}: {status_name}\n")
        return False
    return True


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        sys.stderr.write("usage: python -m chassis.health_probe HOST:PORT [SERVICE]\n")
        return 1
    return 0 if probe(argv[0], argv[1] if len(argv) == 2 else "") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
