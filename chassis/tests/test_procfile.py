"""`platform-procfile`: N replicas of every gRPC service line, each on its own ports, and every
line told where all the replicas listen."""

from __future__ import annotations

import pytest

from chassis.procfile import parse, replica_procfile, stepped_ports

PROCFILE = """\
service-user: POSTGRES_URL=${USER_POSTGRES_URL:-$POSTGRES_URL} service-user
service-product: service-product
api-gateway: api-gateway
"""


def test_every_service_line_becomes_one_line_per_replica_on_its_own_ports() -> None:
    env = {
        "USER_GRPC_PORT": "50051",
        "USER_METRICS_PORT": "9101",
        "PRODUCT_GRPC_PORT": "50052",
        "PRODUCT_METRICS_PORT": "0",
    }
    ports = stepped_ports(["service-user", "service-product"], env, 2, 10)
    lines = dict(parse(replica_procfile(PROCFILE, ports)))
    assert sorted(lines) == [
        "api-gateway",
        "service-product-1",
        "service-product-2",
        "service-user-1",
        "service-user-2",
    ]
    assert lines["service-user-2"].startswith("USER_GRPC_PORT=50061 USER_METRICS_PORT=9111 ")
    assert lines["service-user-2"].endswith(
        "POSTGRES_URL=${USER_POSTGRES_URL:-$POSTGRES_URL} service-user"
    )
    # A metrics port of 0 (none) stays 0 for every replica.
    assert "PRODUCT_METRICS_PORT=0 " in lines["service-product-2"]
    targets = "USER_SERVICE_ADDR=127.0.0.1:50051,127.0.0.1:50061 "
    targets += "PRODUCT_SERVICE_ADDR=127.0.0.1:50052,127.0.0.1:50062 "
    assert all(targets in command for command in lines.values())


def test_a_missing_port_setting_is_named() -> None:
    with pytest.raises(KeyError, match="PRODUCT_GRPC_PORT"):
        stepped_ports(["service-product"], {}, 2, 10)
