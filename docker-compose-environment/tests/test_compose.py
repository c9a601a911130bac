"""Structural promises of docker-compose.yml: health, start order, exposure, settings, volumes."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

PUBLISHED = {
    "api-gateway",
    "grafana",
    "jaeger",
    "kibana",
    "prometheus",
    "rabbitmq",
    "web-storefront",
}
# Where the original platform's users find each UI: host port by default -> container port.
UI_PORTS = {
    "jaeger": ("16686", "16686"),
    "prometheus": ("9090", "9090"),
    "grafana": ("3001", "3000"),
    "kibana": ("5601", "5601"),
    "rabbitmq": ("15672", "15672"),
    "web-storefront": ("8000", "8000"),
}
# Containers with a fixed address on the platform network, each trusted by the gateway as a proxy.
FIXED_ADDRESSES = ("web-storefront", "loadgenerator")
INFRASTRUCTURE = {"postgres", "redis", "rabbitmq", "couchbase", "jaeger"}
ALLOWED_CONDITIONS = {"service_healthy", "service_completed_successfully"}
# `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?message}`; `$$` is a literal dollar.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)(?:[:?-][^}]*)?\}")


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    environment: dict[str, Any] = service.get("environment", {})
    return environment


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]], one_shot_jobs: set[str]
) -> None:
    long_running = set(services) - one_shot_jobs
    missing = {
        name for name in long_running if not services[name].get("healthcheck", {}).get("test")
    }
    assert missing == set()


def test_one_shot_jobs_retry_on_failure_and_are_not_restarted_once_done(
    services: dict[str, dict[str, Any]], one_shot_jobs: set[str]
) -> None:
    for name in one_shot_jobs:
        assert services[name]["restart"] == "on-failure", name
    for name in set(services) - one_shot_jobs:
        assert services[name]["restart"] == "unless-stopped", name


def test_every_dependency_waits_for_health_or_successful_completion(
    services: dict[str, dict[str, Any]], one_shot_jobs: set[str]
) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on must name a condition"
        for target, rule in depends_on.items():
            condition = rule["condition"]
            assert condition in ALLOWED_CONDITIONS, f"{name} -> {target}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health"
            else:
                assert target in one_shot_jobs, f"{name} waits for {target} to finish"


def test_services_start_after_the_infrastructure_they_use(
    services: dict[str, dict[str, Any]],
) -> None:
    def waits_for(name: str) -> set[str]:
        return set(services[name].get("depends_on", {}))

    assert {"postgres", "redis", "rabbitmq"} <= waits_for("platform-bootstrap")
    assert {"postgres", "redis", "platform-bootstrap"} <= waits_for("service-user")
    assert {"postgres", "redis", "rabbitmq", "platform-bootstrap"} <= waits_for("service-product")
    assert {"couchbase-init", "rabbitmq", "service-product", "platform-bootstrap"} <= waits_for(
        "service-cart"
    )
    assert {"platform-bootstrap", "service-payment"} <= waits_for("service-order")
    assert {"postgres", "rabbitmq", "platform-bootstrap", "payment-provider"} <= waits_for(
        "service-payment"
    )
    assert {"postgres", "platform-bootstrap"} <= waits_for("payment-provider")
    assert {"service-product"} <= waits_for("product-seed")
    assert {
        "service-user",
        "service-product",
        "service-cart",
        "service-order",
        "product-seed",
    } <= waits_for("api-gateway")


def test_only_the_gateway_and_the_uis_publish_ports(services: dict[str, dict[str, Any]]) -> None:
    publishing = {name for name, service in services.items() if service.get("ports")}
    assert publishing == PUBLISHED


def test_the_uis_publish_only_their_web_port_on_the_ui_bind_address_at_the_documented_port(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, (host_port, container_port) in UI_PORTS.items():
        (mapping,) = services[name]["ports"]
        match = re.fullmatch(
            r"\$\{UI_BIND_ADDRESS:-127\.0\.0\.1\}:\$\{[A-Z_]+:-(\d+)\}:(\d+)", mapping
        )
        assert match, f"{name}: {mapping}"
        assert match.groups() == (host_port, container_port), name


def test_the_gateway_publishes_its_http_port(services: dict[str, dict[str, Any]]) -> None:
    assert services["api-gateway"]["ports"] == ["${GATEWAY_HOST_PORT:-8080}:8080"]
    assert str(_environment(services["api-gateway"])["GATEWAY_PORT"]) == "8080"


def test_every_container_is_on_the_one_platform_network(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert list(compose["networks"]) == ["platform"]
    for name, service in services.items():
        networks = service.get("networks")
        if name in FIXED_ADDRESSES:  # on it with a fixed address (below)
            assert list(networks) == ["platform"], name
        else:
            assert networks == ["platform"], name


def test_the_gateway_believes_x_forwarded_for_from_the_storefront_and_load_generator_only(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    [subnet] = [entry["subnet"] for entry in compose["networks"]["platform"]["ipam"]["config"]]
    addresses = [services[name]["networks"]["platform"]["ipv4_address"] for name in FIXED_ADDRESSES]
    for address in addresses:
        assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    trusted = _environment(services["api-gateway"])["GATEWAY_TRUSTED_PROXIES"]
    assert trusted.split(",") == addresses
    assert _environment(services["web-storefront"])["GATEWAY_URL"] == "http://api-gateway:8080"


def test_the_load_generator_runs_only_under_the_load_profile_against_the_gateway(
    services: dict[str, dict[str, Any]],
) -> None:
    load = services["loadgenerator"]
    assert load["profiles"] == ["load"]
    assert re.fullmatch(r"locustio/locust:\d+\.\d+\.\d+", load["image"])
    command = load["command"]
    assert command[command.index("--host") + 1] == "http://api-gateway:8080"
    assert "--headless" in command
    assert "../loadgenerator/locustfile.py:/mnt/locust/locustfile.py:ro" in load["volumes"]
    assert load["depends_on"]["api-gateway"] == {"condition": "service_healthy"}


def test_built_services_use_the_root_as_build_context(
    services: dict[str, dict[str, Any]], built_services: dict[str, str]
) -> None:
    for name, folder in built_services.items():
        build = services[name]["build"]
        assert build == {"context": "..", "dockerfile": f"{folder}/Dockerfile"}, name


def test_the_seed_job_runs_the_product_image_with_the_seed_command(
    services: dict[str, dict[str, Any]],
) -> None:
    seed, product = services["product-seed"], services["service-product"]
    assert seed["image"] == product["image"]
    assert seed["build"] == product["build"]
    assert seed["command"] == ["service-product", "seed"]


def test_no_admin_is_created_with_a_default_password(
    services: dict[str, dict[str, Any]], env_example: str
) -> None:
    # service-user creates the admin only when both variables are set: unset, there is none.
    assert _environment(services["service-user"])["ADMIN_PASSWORD"] == "${ADMIN_PASSWORD:-}"
    assert re.search(r"^ADMIN_PASSWORD=$", env_example, flags=re.MULTILINE)


def test_the_infrastructure_file_publishes_only_infrastructure_ports_on_loopback(
    infra_override: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    published = infra_override["services"]
    assert set(published) == INFRASTRUCTURE
    for name, override in published.items():
        assert set(override) == {"ports"}, f"{name}: the override only publishes ports"
        for mapping in override["ports"]:
            assert mapping.startswith("127.0.0.1:"), f"{name}: {mapping}"
            container_port = mapping.rsplit(":", 1)[1]
            assert mapping not in services[name].get("ports", []), name
            assert container_port.isdigit(), name


def test_the_infrastructure_file_publishes_each_server_at_its_standard_port(
    infra_override: dict[str, Any],
) -> None:
    ports = {
        name: {m.rsplit(":", 1)[1]: m.split(":-")[1].split("}")[0] for m in o["ports"]}
        for name, o in infra_override["services"].items()
    }
    assert ports["postgres"] == {"5432": "5432"}
    assert ports["redis"] == {"6379": "6379"}
    assert ports["rabbitmq"] == {"5672": "5672"}
    assert ports["couchbase"] == {"8091": "8091", "11210": "11210"}
    assert ports["jaeger"] == {"4317": "4317"}


def test_every_variable_the_compose_file_reads_is_in_env_example(
    env_example: str, environment_dir: Path
) -> None:
    read = {
        name
        for file in ("docker-compose.yml", "compose.infra.yml")
        for name in INTERPOLATION.findall((environment_dir / file).read_text())
    }
    defined = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", env_example, flags=re.MULTILINE))
    assert read - defined == set(), "read by compose but missing from .env.example"
    # COMPOSE_PROJECT_NAME is read by compose itself, not interpolated.
    assert defined - read - {"COMPOSE_PROJECT_NAME"} == set(), "stale in .env.example"


def test_every_setting_passed_to_a_service_is_documented_in_env_example(
    services: dict[str, dict[str, Any]], env_example: str, built_services: dict[str, str]
) -> None:
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", env_example, flags=re.MULTILINE))
    for name in [*built_services, "product-seed"]:
        undocumented = set(_environment(services[name])) - documented
        assert undocumented == set(), f"{name} gets undocumented settings"


def test_the_services_get_the_shared_platform_settings(
    services: dict[str, dict[str, Any]], built_services: dict[str, str]
) -> None:
    shared = {
        "EVENTS_EXCHANGE",
        "LOG_LEVEL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_TRACES_SAMPLER_ARG",
        "ADMIN_EMAIL",
        "ADMIN_PASSWORD",
    }
    for name in [*built_services, "product-seed"]:
        assert shared <= set(_environment(services[name])), name
    assert _environment(services["service-user"])["OTEL_EXPORTER_OTLP_ENDPOINT"] == (
        "http://jaeger:4317"
    )


def test_the_gateway_reaches_every_service_on_its_grpc_port(
    services: dict[str, dict[str, Any]],
) -> None:
    environment = _environment(services["api-gateway"])
    assert environment["USER_SERVICE_ADDR"] == "service-user:50051"
    assert environment["PRODUCT_SERVICE_ADDR"] == "service-product:50052"
    assert environment["CART_SERVICE_ADDR"] == "service-cart:50053"
    assert _environment(services["service-cart"])["PRODUCT_SERVICE_ADDR"] == "service-product:50052"


def test_the_gateway_verifies_tokens_with_the_issuer_and_audience_service_user_signs(
    services: dict[str, dict[str, Any]],
) -> None:
    user, gateway = _environment(services["service-user"]), _environment(services["api-gateway"])
    assert gateway["GATEWAY_JWT_ISSUER"] == user["JWT_ISSUER"]
    assert gateway["GATEWAY_JWT_AUDIENCE"] == user["JWT_AUDIENCE"]


def test_the_cart_service_uses_the_bucket_the_init_job_creates(
    services: dict[str, dict[str, Any]],
) -> None:
    cart, init = _environment(services["service-cart"]), _environment(services["couchbase-init"])
    assert cart["CART_STORE"] == "couchbase"
    for key in ("COUCHBASE_BUCKET", "COUCHBASE_USERNAME", "COUCHBASE_PASSWORD"):
        assert cart[key] == init[key], key


def test_the_signing_key_lives_on_a_named_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    key_file = _environment(services["service-user"])["JWT_PRIVATE_KEY_FILE"]
    key_dir = key_file.rsplit("/", 1)[0]
    assert f"user-jwt-keys:{key_dir}" in services["service-user"]["volumes"]
    assert "user-jwt-keys" in compose["volumes"]


def test_every_named_volume_is_declared_and_every_bind_mount_exists(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], environment_dir: Path
) -> None:
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("../var/"):
                continue  # output of a run (reports), created by Docker on the first one
            if source.startswith(("./", "../")):
                assert (environment_dir / source).exists(), f"{name}: {source}"
            elif not source.startswith("/"):
                assert source in compose["volumes"], f"{name}: {source}"


def test_down_with_volumes_leaves_nothing_behind(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    # `docker compose down -v` removes the project's network and named volumes, never external
    # ones; host folders are only ever read, so nothing is written outside Docker's volumes.
    for name, network in compose["networks"].items():
        assert not (network or {}).get("external"), f"network {name} is external"
    for name, volume in compose["volumes"].items():
        assert not (volume or {}).get("external"), f"volume {name} is external"
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith(("./", "/")):
                assert mount.endswith(":ro"), f"{name}: {mount} may write to the host"
