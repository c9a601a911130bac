"""`python -m chassis.health_probe TARGET [SERVICE]`: exit 0 when the target is healthy within
2 seconds, 1 otherwise (container healthchecks use it in place of grpc_health_probe and curl).

TARGET is HOST:PORT (gRPC health answers SERVING) or an http:// URL (a GET answers 2xx). It may
name `${VARIABLE:-default}`, expanded from the environment, so that an image's exec-form
HEALTHCHECK follows the port its service was told to listen on."""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEADLINE_S = 2.0
# `${NAME:-default}` (default when unset or empty) and `${NAME}`, as in a shell or compose file.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(target: str, environ: Mapping[str, str]) -> str:
    """`target` with every `${NAME:-default}` replaced by the variable, or its default."""
    return _VARIABLE.sub(lambda match: environ.get(match[1]) or match[2] or "", target)


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


def probe_http(url: str, deadline_s: float = DEADLINE_S) -> bool:
    """True when a GET of `url` answers 2xx within the deadline."""
    try:
        with urllib.request.urlopen(url, timeout=deadline_s) as response:  # noqa: S310 (http only)
            status: int = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        sys.stderr.write(f"{url}: {error}\n")
        return False
    if not 200 <= status < 300:
        sys.stderr.write(f"{url}: HTTP {status}\n")
        return False
    return True


def main(argv: list[str], environ: Mapping[str, str] = os.environ) -> int:
    if len(argv) not in (1, 2):
        sys.stderr.write("usage: python -m chassis.health_probe HOST:PORT|URL [SERVICE]\n")
        return 1
    target = expand(argv[0], environ)
    if target.startswith("http://"):
        return 0 if len(argv) == 1 and probe_http(target) else 1
    return 0 if probe(target, argv[1] if len(argv) == 2 else "") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
