"""The observability stack's wiring: Prometheus scrapes every service, Grafana's dashboards query
metrics the code really defines, and Fluent Bit ships the services' logs to ecommerce-logs-*."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from api_gateway.config import GatewaySettings
from cart_service.settings import CartSettings
from order_service.settings import OrderSettings
from payment_service.settings import PaymentSettings
from product_service.settings import ProductSettings
from user_service.settings import UserSettings
from web_storefront.settings import StorefrontSettings

METRICS_ENDPOINTS = {
    "service-user": UserSettings.model_fields["metrics_port"].default,
    "service-product": ProductSettings.model_fields["metrics_port"].default,
    "service-cart": CartSettings.model_fields["metrics_port"].default,
    "service-order": OrderSettings.model_fields["metrics_port"].default,
    "service-payment": PaymentSettings.model_fields["metrics_port"].default,
    "api-gateway": GatewaySettings.model_fields["metrics_port"].default,
    "web-storefront": StorefrontSettings.model_fields["metrics_port"].default,
}
SOURCE_FOLDERS = (
    "chassis/src",
    "service-user/src",
    "service-product/src",
    "service-cart/src",
    "service-order/src",
    "service-payment/src",
)
METRIC_DEFINITION = re.compile(
    r"\b(?:Counter|Gauge|Histogram|Summary)\(\s*\"([a-z_:][a-z0-9_:]*)\""
)
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "irate",
    "histogram_quantile", "or", "and", "unless", "vector", "on", "ignoring",
}  # fmt: skip


def _targets(prometheus_config: dict[str, Any]) -> dict[str, list[str]]:
    return {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in prometheus_config["scrape_configs"]
    }


def _dashboards(environment_dir: Path) -> dict[str, dict[str, Any]]:
    folder = environment_dir / "grafana/dashboards"
    return {path.name: json.loads(path.read_text()) for path in folder.glob("*.json")}


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    return [
        t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", []) if "expr" in t
    ]


def _metric_names(expression: str) -> set[str]:
    without_strings = re.sub(r'"(?:\\.|[^"\\])*"', '""', expression)
    without_groupings = re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_groupings)
    without_matchers = re.sub(r"\{[^}]*\}", "", without_ranges)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_matchers))
    return words - PROMQL_WORDS


def _base_name(exposed: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_total"):
        exposed = exposed.removesuffix(suffix)
    return exposed


def test_every_service_metrics_endpoint_is_scraped(prometheus_config: dict[str, Any]) -> None:
    targets = _targets(prometheus_config)
    for name, port in METRICS_ENDPOINTS.items():
        assert targets[name] == [f"{name}:{port}"], name


def test_the_broker_is_scraped_through_its_enabled_prometheus_plugin(
    prometheus_config: dict[str, Any], environment_dir: Path
) -> None:
    assert _targets(prometheus_config)["rabbitmq"] == ["rabbitmq:15692"]
    plugins = (environment_dir / "rabbitmq/enabled_plugins").read_text()
    assert "rabbitmq_prometheus" in plugins
    assert "rabbitmq_management" in plugins
    config = (environment_dir / "rabbitmq/rabbitmq.conf").read_text()
    assert "prometheus.return_per_object_metrics = true" in config
    assert "default_queue_type = quorum" in config


def test_dashboards_query_only_metrics_the_platform_defines(environment_dir: Path) -> None:
    root = environment_dir.parent
    sources = [*SOURCE_FOLDERS, "api-gateway/src"]
    defined = {
        _base_name(name)
        for folder in sources
        for path in (root / folder).rglob("*.py")
        for name in METRIC_DEFINITION.findall(path.read_text())
    }
    for file_name, dashboard in _dashboards(environment_dir).items():
        for expression in _expressions(dashboard):
            for metric in _metric_names(expression):
                if metric.startswith("rabbitmq_"):
                    continue  # the broker's own exporter
                assert _base_name(metric) in defined, f"{file_name}: {metric} is defined nowhere"


def test_the_platform_dashboard_covers_red_saga_and_cache_metrics(environment_dir: Path) -> None:
    queried = {
        _base_name(metric)
        for expression in _expressions(_dashboards(environment_dir)["platform.json"])
        for metric in _metric_names(expression)
    }
    assert {"http_requests", "http_request_duration_seconds"} <= queried
    assert {"grpc_server_handled", "grpc_server_handling_seconds"} <= queried
    assert {"events_consumed", "events_dead_lettered", "outbox_backlog"} <= queried
    assert {"rabbitmq_queue_messages", "product_cache_requests"} <= queried
    assert {"orders_created", "orders", "saga_duration_seconds"} <= queried
    assert {"payment_provider_calls", "payments"} <= queried


def test_dashboards_use_only_provisioned_datasources(environment_dir: Path) -> None:
    provisioning = environment_dir / "grafana/provisioning/datasources/datasources.yml"
    uids = {source["uid"] for source in yaml.safe_load(provisioning.read_text())["datasources"]}
    for file_name, dashboard in _dashboards(environment_dir).items():
        for panel in dashboard["panels"]:
            if "datasource" in panel:
                assert panel["datasource"]["uid"] in uids, f"{file_name}: {panel['title']}"


def test_dashboard_panels_do_not_overlap(environment_dir: Path) -> None:
    for file_name, dashboard in _dashboards(environment_dir).items():
        cells: set[tuple[int, int]] = set()
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            area = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not area & cells, f"{file_name}: {panel['title']} overlaps another panel"
            assert grid["x"] + grid["w"] <= 24, f"{file_name}: {panel['title']} is too wide"
            cells |= area


def test_grafana_loads_the_dashboards_folder_it_is_given(
    services: dict[str, dict[str, Any]], environment_dir: Path
) -> None:
    provider_file = environment_dir / "grafana/provisioning/dashboards/dashboards.yml"
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    assert (
        f"./grafana/dashboards:{provider['options']['path']}:ro" in services["grafana"]["volumes"]
    )


def test_fluent_bit_keeps_the_labelled_service_logs_and_indexes_them_as_ecommerce_logs(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], environment_dir: Path
) -> None:
    label = compose["x-app-logging"]["options"]["labels"]
    for name in (
        "service-user",
        "service-product",
        "service-cart",
        "service-order",
        "service-payment",
        "payment-provider",
        "api-gateway",
        "product-seed",
    ):
        assert services[name]["logging"]["options"]["labels"] == label, name
        assert services[name]["labels"][label] == name, name
    config = (environment_dir / "fluent-bit/fluent-bit.conf").read_text()
    assert f"$attrs['{label}']" in config
    assert re.search(r"^\s*Logstash_Prefix\s+ecommerce-logs\s*$", config, flags=re.MULTILINE)
    assert re.search(r"^\s*Key_Name\s+log\s*$", config, flags=re.MULTILINE)
    mounted = {mount.split(":")[1] for mount in services["fluent-bit"]["volumes"]}
    assert "/var/lib/docker/containers" in mounted


def test_kibana_gets_a_data_view_over_the_log_indices(environment_dir: Path) -> None:
    script = (environment_dir / "kibana/create-data-view.sh").read_text()
    assert '"title": "ecommerce-logs-*"' in script
    assert '"timeFieldName": "@timestamp"' in script


def _alert_rules(environment_dir: Path) -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load((environment_dir / "prometheus/alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_prometheus_loads_the_alert_rules_mounted_beside_its_config(
    prometheus_config: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    assert prometheus_config["rule_files"] == ["alerts.yml"]
    volumes = services["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes


def test_alerts_cover_saga_failures_dead_letters_outbox_age_and_gateway_errors(
    environment_dir: Path,
) -> None:
    rules = _alert_rules(environment_dir)
    expressions = {name: " ".join(rule["expr"].split()) for name, rule in rules.items()}
    assert (
        'orders_total{status="CANCELLED",reason!="USER_CANCELLED"}'
        in expressions["SagaFailureRateHigh"]
    )
    assert "max by (queue) (events_dlq_depth) > 0" in expressions["DeadLetterQueueNotEmpty"]
    assert "outbox_oldest_unpublished_age_seconds" in expressions["OutboxBacklogStale"]
    assert 'http_requests_total{status=~"5.."}' in expressions["GatewayServerErrorRateHigh"]
    for name, rule in rules.items():
        assert rule.get("for"), f"{name} fires on a single evaluation"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name


def test_alerts_read_only_metrics_the_platform_defines(
    environment_dir: Path,
) -> None:
    root = environment_dir.parent
    defined = {
        _base_name(name)
        for folder in (*SOURCE_FOLDERS, "api-gateway/src")
        for path in (root / folder).rglob("*.py")
        for name in METRIC_DEFINITION.findall(path.read_text())
    } | {"up"}
    for name, rule in _alert_rules(environment_dir).items():
        for metric in _metric_names(rule["expr"]):
            assert _base_name(metric) in defined, f"{name}: {metric} is defined nowhere"
