"""`python -m chassis.health_probe`: the container healthcheck follows the port its service was
given through the environment, and probes HTTP readiness as well as gRPC health."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from chassis.health_probe import expand, main


class _Readiness(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/readyz" else 503)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Readiness)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_variable_in_the_target_is_read_from_the_environment() -> None:
    target = "127.0.0.1:${USER_GRPC_PORT:-50051}"
    assert expand(target, {"USER_GRPC_PORT": "41001"}) == "127.0.0.1:41001"


def test_an_unset_or_empty_variable_falls_back_to_its_default() -> None:
    target = "http://127.0.0.1:${GATEWAY_PORT:-8080}/readyz"
    assert expand(target, {}) == "http://127.0.0.1:8080/readyz"
    assert expand(target, {"GATEWAY_PORT": ""}) == "http://127.0.0.1:8080/readyz"


def test_an_http_target_is_healthy_on_2xx_only(http_port: int) -> None:
    environ = {"GATEWAY_PORT": str(http_port)}
    assert main(["http://127.0.0.1:${GATEWAY_PORT:-8080}/readyz"], environ) == 0
    assert main(["http://127.0.0.1:${GATEWAY_PORT:-8080}/not-ready"], environ) == 1


def test_an_http_target_that_refuses_the_connection_is_unhealthy() -> None:
    assert main([f"http://127.0.0.1:{_closed_port()}/readyz"], {}) == 1


@pytest.mark.slow
def test_a_grpc_target_with_nothing_listening_is_unhealthy() -> None:
    environ = {"USER_GRPC_PORT": str(_closed_port())}
    assert main(["127.0.0.1:${USER_GRPC_PORT:-50051}"], environ) == 1


def test_a_wrong_number_of_arguments_is_unhealthy() -> None:
    assert main([], {}) == 1
    assert main(["a", "b", "c"], {}) == 1
