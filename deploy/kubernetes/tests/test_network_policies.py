"""The network policies open exactly the platform's call graph, as the services' own settings
draw it: a service is reached on its gRPC port by the processes whose settings name it and by no
other, the storefront only by the ingress controller, the gateway only by the ingress controller
and the storefront (whose GATEWAY_URL names it), the payment provider only by service-payment
(whose PAYMENT_PROVIDER_URL names it), each store's port only by its owners (the processes given
its URL), and Prometheus reads every metrics port."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import GRPC_SERVICES, HTTP_SERVICES, PROCESSES, SERVICES, STAND_INS, Obj, Rendered

STORE_PORTS = {"POSTGRES_URL": {5432}, "REDIS_URL": {6379}, "AMQP_URL": {5672}}
COUCHBASE_PORTS = {8091, 11210, 18091, 11207}
# gRPC services no process of the platform calls (yet), and why: nothing may reach their port.
UNCALLED = {
    "service-payment": "GetPayment has no client yet: service-order learns where a payment is "
    "from the payment events",
}
INGRESS_CONTROLLER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
}


@pytest.fixture(scope="module", params=["production", "local-network-policies"])
def policed(request: pytest.FixtureRequest, overlays: dict[str, Rendered]) -> Rendered:
    return overlays[request.param]


def container(overlay: Rendered, service: str) -> Obj:
    (only,) = overlay.deployment(service)["spec"]["template"]["spec"]["containers"]
    result: Obj = only
    return result


def grpc_port(overlay: Rendered, service: str) -> int:
    """The port a process serves its callers on (gRPC, or HTTP for the gateway and storefront)."""
    port: int = container(overlay, service)["ports"][0]["containerPort"]
    return port


def gateway_clients(overlay: Rendered) -> set[str]:
    """The processes that call the gateway: their ConfigMap names its Service in GATEWAY_URL."""
    return {
        name
        for name in PROCESSES
        if overlay.get("ConfigMap", name)["data"]
        .get("GATEWAY_URL", "")
        .startswith("http://api-gateway:")
    }


def provider_clients(overlay: Rendered) -> set[str]:
    """The processes that call the payment provider: PAYMENT_PROVIDER_URL names its Service."""
    return {
        name
        for name in PROCESSES
        if overlay.get("ConfigMap", name)["data"]
        .get("PAYMENT_PROVIDER_URL", "")
        .startswith("http://payment-provider:")
    }


def callees(overlay: Rendered, service: str) -> set[str]:
    """The services a process calls: those its ConfigMap names in a *_SERVICE_ADDR."""
    data: dict[str, str] = overlay.get("ConfigMap", service)["data"]
    return {
        "service-" + name.removesuffix("_SERVICE_ADDR").lower()
        for name in data
        if name.endswith("_SERVICE_ADDR")
    }


def selected_names(peer: dict[str, Any]) -> set[str]:
    selector = peer.get("podSelector", {})
    names = set()
    if "app.kubernetes.io/name" in selector.get("matchLabels", {}):
        names.add(selector["matchLabels"]["app.kubernetes.io/name"])
    for expression in selector.get("matchExpressions", []):
        if expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In":
            names.update(expression["values"])
    return names


def policies_of(overlay: Rendered, name: str) -> list[Obj]:
    """The policies selecting the pods named `name` (by name, or all pods of the namespace)."""
    return [
        p
        for p in overlay.of_kind("NetworkPolicy")
        if p["spec"]["podSelector"] in ({}, {"matchLabels": {"app.kubernetes.io/name": name}})
    ]


def ingress_peers(overlay: Rendered, name: str, port: int) -> set[str]:
    """The pod names allowed in to `name` on `port`, from this namespace."""
    peers = set()
    for policy in policies_of(overlay, name):
        for rule in policy["spec"].get("ingress", []):
            if any(p.get("port") == port for p in rule.get("ports", [])):
                for peer in rule.get("from", []):
                    if "namespaceSelector" not in peer:
                        peers |= selected_names(peer)
    return peers


def egress_ports(overlay: Rendered, name: str, to: str | None) -> set[int]:
    """The ports `name` may open towards pods named `to` (None: towards any address)."""
    ports: set[int] = set()
    for policy in policies_of(overlay, name):
        for rule in policy["spec"].get("egress", []):
            peers = rule.get("to")
            # A rule without `to` allows any destination, so any pod too; `podSelector: {}`
            # any pod of the namespace.
            reaches = peers is None or (
                to is not None
                and any(to in selected_names(p) or p == {"podSelector": {}} for p in peers)
            )
            if reaches:
                ports |= {p["port"] for p in rule.get("ports", []) if isinstance(p["port"], int)}
    return ports


def test_every_pod_starts_from_deny_all(policed: Rendered) -> None:
    deny = policed.get("NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize("service", GRPC_SERVICES)
def test_a_service_is_reached_by_its_callers_and_no_one_else(
    policed: Rendered, service: str
) -> None:
    callers = {caller for caller in PROCESSES if service in callees(policed, caller)}
    if service in UNCALLED:
        assert not callers, f"{service} has callers now: drop it from UNCALLED"
    else:
        assert callers, f"{service} is called by someone"
    assert ingress_peers(policed, service, grpc_port(policed, service)) == callers
    for caller in callers:
        assert grpc_port(policed, service) in egress_ports(policed, caller, service)


def only_rule_of(overlay: Rendered, name: str) -> Obj:
    (policy,) = [p for p in policies_of(overlay, name) if p["metadata"]["name"] == name]
    (rule,) = policy["spec"]["ingress"]
    result: Obj = rule
    return result


def test_only_the_ingress_controller_reaches_the_storefront(policed: Rendered) -> None:
    rule = only_rule_of(policed, "web-storefront")
    assert rule["from"] == [INGRESS_CONTROLLER]
    assert [p["port"] for p in rule["ports"]] == [grpc_port(policed, "web-storefront")]
    assert ingress_peers(policed, "web-storefront", grpc_port(policed, "web-storefront")) == set()


def test_only_the_ingress_controller_and_the_storefront_reach_the_gateway(
    policed: Rendered,
) -> None:
    port = grpc_port(policed, "api-gateway")
    rule = only_rule_of(policed, "api-gateway")
    assert INGRESS_CONTROLLER in rule["from"]
    assert [p["port"] for p in rule["ports"]] == [port]
    # From the namespace: exactly the processes whose settings call the gateway.
    assert gateway_clients(policed) == {"web-storefront"}
    assert ingress_peers(policed, "api-gateway", port) == gateway_clients(policed)
    assert port in egress_ports(policed, "web-storefront", "api-gateway")


def test_only_service_payment_reaches_the_payment_provider(policed: Rendered) -> None:
    port = grpc_port(policed, "payment-provider")
    rule = only_rule_of(policed, "payment-provider")
    assert [p["port"] for p in rule["ports"]] == [port]
    assert provider_clients(policed) == {"service-payment"}
    assert ingress_peers(policed, "payment-provider", port) == provider_clients(policed)
    assert port in egress_ports(policed, "service-payment", "payment-provider")
    for other in set(PROCESSES) - provider_clients(policed):
        assert port not in egress_ports(policed, other, "payment-provider"), other


@pytest.mark.parametrize("service", [*HTTP_SERVICES, *STAND_INS])
def test_an_http_process_opens_no_grpc_service_it_does_not_call(
    policed: Rendered, service: str
) -> None:
    for callee in GRPC_SERVICES:
        reachable = grpc_port(policed, callee) in egress_ports(policed, service, callee)
        assert reachable == (callee in callees(policed, service)), (service, callee)


@pytest.mark.parametrize("service", PROCESSES)
def test_each_store_is_reached_only_by_its_owners(policed: Rendered, service: str) -> None:
    given = {item["name"] for item in container(policed, service).get("env", [])}
    allowed = egress_ports(policed, service, None)
    for variable, ports in STORE_PORTS.items():
        if variable in given:
            assert ports <= allowed, f"{service} reaches the store of its {variable}"
        else:
            assert not ports & allowed, f"{service} may open a store it does not own"
    owns_couchbase = "COUCHBASE_PASSWORD" in given
    assert bool(COUCHBASE_PORTS & allowed) == owns_couchbase


@pytest.mark.parametrize(
    ("store", "variable"),
    [("postgres", "POSTGRES_URL"), ("redis", "REDIS_URL"), ("rabbitmq", "AMQP_URL")],
)
def test_each_local_store_lets_in_exactly_its_owners(
    overlays: dict[str, Rendered], store: str, variable: str
) -> None:
    local = overlays["local-network-policies"]
    owners = {
        service
        for service in PROCESSES
        if variable in {item["name"] for item in container(local, service).get("env", [])}
    }
    (port,) = STORE_PORTS[variable]
    # Besides the processes given its URL, only the one-shot jobs that make the services' accounts
    # (as the store's administrator) and seed the catalogue.
    assert ingress_peers(local, store, port) - {"product-seed", "platform-bootstrap"} == owners


def test_prometheus_reads_every_metrics_port(policed: Rendered) -> None:
    (telemetry,) = [
        p for p in policed.of_kind("NetworkPolicy") if p["metadata"]["name"] == "platform-telemetry"
    ]
    (rule,) = telemetry["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    assert [p["port"] for p in rule["ports"]] == ["metrics"]
    for service in SERVICES:  # the stand-ins serve no metrics
        labels = policed.deployment(service)["spec"]["template"]["metadata"]["labels"]
        assert telemetry["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        assert "metrics" in {p["name"] for p in container(policed, service)["ports"]}


def test_the_local_prometheus_may_open_every_metrics_port(overlays: dict[str, Rendered]) -> None:
    local = overlays["local-network-policies"]
    for service in SERVICES:
        (metrics,) = [p for p in container(local, service)["ports"] if p["name"] == "metrics"]
        assert metrics["containerPort"] in egress_ports(local, "prometheus", service), service
