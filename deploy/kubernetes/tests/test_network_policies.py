"""The network policies open exactly the platform's call graph, as the services' own settings
draw it: a service is reached on its gRPC port by the processes whose settings name it and by no
other, the gateway only by the ingress controller, each store's port only by its owners (the
services given its URL), and Prometheus reads every metrics port."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import SERVICES, Obj, Rendered

STORE_PORTS = {"POSTGRES_URL": {5432}, "REDIS_URL": {6379}, "AMQP_URL": {5672}}
COUCHBASE_PORTS = {8091, 11210, 18091, 11207}


@pytest.fixture(scope="module", params=["production", "local-network-policies"])
def policed(request: pytest.FixtureRequest, overlays: dict[str, Rendered]) -> Rendered:
    return overlays[request.param]


def container(overlay: Rendered, service: str) -> Obj:
    (only,) = overlay.deployment(service)["spec"]["template"]["spec"]["containers"]
    result: Obj = only
    return result


def grpc_port(overlay: Rendered, service: str) -> int:
    port: int = container(overlay, service)["ports"][0]["containerPort"]
    return port


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
            # A rule without `to` allows any destination, so any pod too.
            reaches = peers is None or (
                to is not None and any(to in selected_names(p) for p in peers)
            )
            if reaches:
                ports |= {p["port"] for p in rule.get("ports", []) if isinstance(p["port"], int)}
    return ports


def test_every_pod_starts_from_deny_all(policed: Rendered) -> None:
    deny = policed.get("NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "api-gateway"])
def test_a_service_is_reached_by_its_callers_and_no_one_else(
    policed: Rendered, service: str
) -> None:
    callers = {caller for caller in SERVICES if service in callees(policed, caller)}
    assert callers, f"{service} is called by someone"
    assert ingress_peers(policed, service, grpc_port(policed, service)) == callers
    for caller in callers:
        assert grpc_port(policed, service) in egress_ports(policed, caller, service)


def test_only_the_ingress_controller_reaches_the_gateway(policed: Rendered) -> None:
    (policy,) = [
        p for p in policies_of(policed, "api-gateway") if p["metadata"]["name"] == "api-gateway"
    ]
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
    }
    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}
    assert [p["port"] for p in rule["ports"]] == [grpc_port(policed, "api-gateway")]


@pytest.mark.parametrize("service", SERVICES)
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


def test_prometheus_reads_every_metrics_port(policed: Rendered) -> None:
    (telemetry,) = [
        p for p in policed.of_kind("NetworkPolicy") if p["metadata"]["name"] == "platform-telemetry"
    ]
    (rule,) = telemetry["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    assert [p["port"] for p in rule["ports"]] == ["metrics"]
    for service in SERVICES:
        labels = policed.deployment(service)["spec"]["template"]["metadata"]["labels"]
        assert telemetry["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        assert "metrics" in {p["name"] for p in container(policed, service)["ports"]}
