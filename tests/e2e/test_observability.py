"""Observability of the running platform, from one checkout: the checkout is one trace from the
gateway to the cart's clean-up (received by an OTLP receiver inside this test), every log line is
JSON and the checkout's lines share its trace id, and what the processes export on their metrics
ports is exactly the catalogue (docs/metrics.md) the dashboards and alert rules query."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from chassis.testing.waiting import eventually

from .catalogue import (
    PROCESSES,
    base_name,
    label_values,
    queried_series,
    read_catalogue,
    read_scrape,
)
from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Platform, free_port, start_platform
from .otlp import Collector, Span, ancestry, render_tree
from .shop import Admin, Shopper, login, new_shopper

ROOT = Path(__file__).resolve().parents[2]
SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
METRICS_PORTS = {
    "api-gateway": "GATEWAY_METRICS_PORT",
    "service-user": "USER_METRICS_PORT",
    "service-product": "PRODUCT_METRICS_PORT",
    "service-cart": "CART_METRICS_PORT",
    "service-order": "ORDER_METRICS_PORT",
    "service-payment": "PAYMENT_METRICS_PORT",
}
CHECKOUT = "/ecommerce.order.v1.OrderService/Checkout"


@dataclass(repr=False)
class Observed:
    """The platform after one confirmed checkout whose ordered lines left the cart."""

    platform: Platform
    collector: Collector
    order_id: str

    def __repr__(self) -> str:  # a failure report shows this, not the platform's environment
        return f"<Observed order {self.order_id} on {self.platform.base_url}>"

    def checkout_trace(self) -> list[Span]:
        """The spans of the trace of `POST /api/v1/checkout` received so far."""
        servers = [
            span
            for span in self.collector.receiver.all()
            if span.service == "api-gateway"
            and span.kind == "SERVER"
            and span.attributes.get("http.route") == "/api/v1/checkout"
        ]
        assert len(servers) <= 1, "one checkout, one request span"
        return self.collector.receiver.trace(servers[0].trace_id) if servers else []

    async def trace_complete(self) -> bool:
        """The cart's clean-up received, with all its ancestors up to a root, and the payment's
        capture (which follows the confirmation, as the clean-up does)."""
        spans = self.checkout_trace()
        leaf = _cart_clean_up(spans)
        captured = any(
            str(span.attributes.get("url.full", "")).endswith("/capture") for span in spans
        )
        return leaf is not None and not ancestry(spans, leaf)[0].parent_id and captured


async def _checkout(client: httpx.AsyncClient) -> tuple[Shopper, str]:
    admin = Admin(client, await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
    lamp = await admin.create_product(stock=5)
    shopper = await new_shopper(client)
    await shopper.add(lamp["id"], 2)
    order = await shopper.checkout_order()
    assert (await shopper.final_order(order["id"]))["status"] == "CONFIRMED"
    return shopper, order["id"]


@pytest.fixture(scope="module")
async def observed(make_env: Any) -> AsyncIterator[Observed]:
    env = await make_env("obs")
    with Collector() as collector:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.endpoint
        env["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # milliseconds: spans reach the receiver at once
        for variable in METRICS_PORTS.values():
            env[variable] = str(free_port())
        platform = await asyncio.to_thread(start_platform, env)
        try:
            async with httpx.AsyncClient(base_url=platform.base_url, timeout=30) as client:
                shopper, order_id = await _checkout(client)

                async def cart_cleaned() -> bool:
                    return await shopper.cart() == {}

                await eventually(cart_cleaned)
            observed = Observed(platform, collector, order_id)
            # Spans arrive in batches; a trace still incomplete after this is the test's failure.
            with contextlib.suppress(TimeoutError):
                await eventually(observed.trace_complete, within=20)
            yield observed
        finally:
            await asyncio.to_thread(platform.stop_all)


@contextlib.contextmanager
def showing(spans: list[Span]) -> Iterator[None]:
    """On a failed assertion, print the trace as a tree."""
    try:
        yield
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n\nthe checkout's trace:\n{render_tree(spans)}") from None


def _step(span: Span) -> tuple[str, str, str]:
    what = span.attributes.get("messaging.rabbitmq.destination.routing_key") or span.name
    return (span.service, span.kind, str(what))


def _cart_clean_up(spans: list[Span]) -> Span | None:
    found = [s for s in spans if s.service == "service-cart" and s.kind == "CONSUMER"]
    return found[0] if found else None


def test_one_checkout_is_one_trace_from_the_gateway_to_the_carts_clean_up(
    observed: Observed,
) -> None:
    spans = observed.checkout_trace()
    with showing(spans):
        leaf = _cart_clean_up(spans)
        assert leaf is not None, "the cart's clean-up is not in the checkout's trace"
        assert [_step(span) for span in ancestry(spans, leaf)] == [
            ("api-gateway", "SERVER", "POST /api/v1/checkout"),
            ("api-gateway", "CLIENT", CHECKOUT),
            ("service-order", "SERVER", CHECKOUT),
            ("service-order", "PRODUCER", "order.created"),
            ("service-product", "CONSUMER", "order.created"),
            ("service-product", "PRODUCER", "stock.reserved"),
            ("service-payment", "CONSUMER", "stock.reserved"),
            ("service-payment", "PRODUCER", "payment.authorized"),
            ("service-order", "CONSUMER", "payment.authorized"),
            ("service-order", "PRODUCER", "order.confirmed"),
            ("service-cart", "CONSUMER", "order.confirmed"),
        ]
        # The provider's authorisation and capture: HTTP calls of service-payment's worker,
        # each in the trace of the event that made it due (stock.reserved, order.confirmed).
        calls = [s for s in spans if s.service == "service-payment" and s.kind == "CLIENT"]
        provider_calls = [s for s in calls if "http.request.method" in s.attributes]
        assert sorted(str(s.attributes["url.full"]).rsplit("/", 1)[-1] for s in provider_calls) == [
            "authorizations",
            "capture",
        ]
        for call in provider_calls:
            assert by_id_of(spans)[call.parent_id].kind == "CONSUMER", call.describe()
        by_id = {span.span_id: span for span in spans}
        root = ancestry(spans, leaf)[0]
        orphans = [span for span in spans if span.parent_id not in by_id]
        assert orphans == [root], "one root (the gateway's request), every other parent received"
        for span in spans:
            _assert_semantic_conventions(span, observed.order_id)
            assert span.resource["service.name"] == span.service
            assert span.resource.get("service.version"), span.describe()
        for consumer in (span for span in spans if span.kind == "CONSUMER"):
            producer = by_id[consumer.parent_id]
            assert producer.kind == "PRODUCER"
            assert (producer.trace_id, producer.span_id) in consumer.links
            assert _database_children(spans, consumer), f"no database span in {consumer.name}"
        [checkout] = [s for s in spans if s.service == "service-order" and s.name == CHECKOUT]
        assert "postgresql" in _database_children(spans, checkout)


def by_id_of(spans: list[Span]) -> dict[str, Span]:
    return {span.span_id: span for span in spans}


def _database_children(spans: list[Span], parent: Span) -> set[str]:
    return {
        str(span.attributes.get("db.system") or span.attributes.get("db.system.name"))
        for span in spans
        if span.parent_id == parent.span_id
        and span.kind == "CLIENT"
        and "rpc.system" not in span.attributes
    }


def _assert_semantic_conventions(span: Span, order_id: str) -> None:
    """Each span is the HTTP request, an RPC, a database call or a message, with the standard
    attributes of its kind (OpenTelemetry semantic conventions)."""
    attributes = span.attributes
    if "http.route" in attributes:
        assert (span.service, span.kind) == ("api-gateway", "SERVER"), span.describe()
        status = attributes.get("http.status_code") or attributes.get("http.response.status_code")
        assert status == 202, span.describe()
    elif "rpc.system" in attributes:
        assert attributes["rpc.system"] == "grpc", span.describe()
        assert span.name == f"/{attributes['rpc.service']}/{attributes['rpc.method']}"
        assert "rpc.grpc.status_code" in attributes, span.describe()
    elif "http.request.method" in attributes:
        # service-payment's calls to the payment provider (HTTP client conventions).
        assert (span.service, span.kind) == ("service-payment", "CLIENT"), span.describe()
        assert span.name == attributes["http.request.method"] == "POST", span.describe()
        assert attributes["http.response.status_code"] == 200, span.describe()
        assert str(attributes["url.full"]).startswith("http"), span.describe()
    elif "messaging.system" in attributes:
        assert attributes["messaging.system"] == "rabbitmq"
        operation = {"PRODUCER": "send", "CONSUMER": "process"}[span.kind]
        assert attributes["messaging.operation.type"] == operation, span.describe()
        assert span.name == f"{attributes['messaging.operation.name']} " + str(
            attributes["messaging.destination.name"]
        )
        assert attributes["messaging.message.conversation_id"] == order_id
        assert UUID.fullmatch(str(attributes["messaging.message.id"])), span.describe()
        assert attributes["messaging.rabbitmq.destination.routing_key"], span.describe()
    else:
        system = attributes.get("db.system") or attributes.get("db.system.name")
        assert system in {"postgresql", "redis"}, f"a span of no known kind: {span.describe()}"
        assert span.kind == "CLIENT", span.describe()


def _json_lines(platform: Platform, process: str) -> list[dict[str, Any]]:
    """What the process wrote, one object per line (honcho prefixes `HH:MM:SS name.1 | `)."""
    lines = []
    for line in platform.logs(process):
        prefix, separator, payload = line.partition(" | ")
        if not separator or prefix.split()[-1] == "system":
            continue  # honcho's own lines
        try:
            parsed = json.loads(payload)
        except json.JSONDecodeError:
            raise AssertionError(f"{process} wrote a line that is not JSON: {payload}") from None
        assert isinstance(parsed, dict), payload
        lines.append(parsed)
    return lines


def test_every_log_line_is_json_with_a_utc_timestamp_level_service_and_event_name(
    observed: Observed,
) -> None:
    for process in PROCESSES:
        lines = _json_lines(observed.platform, process)
        assert lines, f"{process} logged nothing"
        for line in lines:
            timestamp = datetime.fromisoformat(line["timestamp"])
            assert timestamp.utcoffset() == timedelta(0), line
            assert line["level"] in {"debug", "info", "warning", "error", "critical"}, line
            assert line["service"] == process, line
            assert SNAKE_CASE.fullmatch(line["event"]), line
            assert ("trace_id" in line) == ("span_id" in line), line


def test_a_checkouts_log_lines_in_every_service_carry_its_trace_id(observed: Observed) -> None:
    [trace_id] = {span.trace_id for span in observed.checkout_trace()}
    order_id = observed.order_id
    [request] = [
        line
        for line in _json_lines(observed.platform, "api-gateway")
        if line["event"] == "http_request" and line["route"] == "/api/v1/checkout"
    ]
    assert request["trace_id"] == trace_id
    for process in ("service-order", "service-product", "service-cart", "service-payment"):
        about_the_order = [
            line
            for line in _json_lines(observed.platform, process)
            if order_id in (line.get("order_id"), line.get("correlation_id"))
        ]
        assert about_the_order, f"{process} logged nothing about the order"
        assert {line.get("trace_id") for line in about_the_order} == {trace_id}, process
    transitions = [
        (line["status"], line["previous_status"], line["trace_id"])
        for line in _json_lines(observed.platform, "service-order")
        if line["event"] == "order_status_changed" and line["order_id"] == order_id
    ]
    assert transitions == [("PENDING", None, trace_id), ("CONFIRMED", "PENDING", trace_id)]


async def test_the_metrics_catalogue_is_what_the_processes_export_and_what_is_queried(
    observed: Observed,
) -> None:
    catalogue = read_catalogue()
    exported: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for process, variable in METRICS_PORTS.items():
            url = f"http://127.0.0.1:{observed.platform.env[variable]}/metrics"
            text = (await client.get(url)).text
            exported[process] = read_scrape(text)
            ids = {value for value in label_values(text) if UUID.search(value)}
            assert ids == set(), f"{process}: label values that are ids (unbounded)"
    for process in PROCESSES:
        scraped, listed = exported[process], catalogue.exported[process]
        assert set(scraped) == set(listed), f"{process}: exported != docs/metrics.md"
        for name, metric in scraped.items():
            assert metric.type == listed[name].type, f"{process}: {name} is a {metric.type}"
            if metric.labels is not None:
                assert metric.labels == listed[name].labels, f"{process}: labels of {name}"
    for where, names in queried_series().items():
        unknown = {name for name in names if not catalogue.knows(base_name(name, catalogue))}
        assert unknown == set(), f"{where} queries metrics no process exports"


def test_every_log_event_in_the_code_is_a_snake_case_name() -> None:
    levels = {"debug", "info", "warning", "error", "exception", "critical"}
    sources = [ROOT / "chassis/src", ROOT / "api-gateway/src", ROOT / "web-storefront/src"]
    sources += [path / "src" for path in ROOT.glob("service-*")]
    offending = []
    for path in (file for folder in sources for file in folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in levels
                and node.args
            ):
                event = node.args[0]
                if not (
                    isinstance(event, ast.Constant)
                    and isinstance(event.value, str)
                    and SNAKE_CASE.fullmatch(event.value)
                ):
                    offending.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offending == [], "log events must be snake_case names (details go in fields)"
