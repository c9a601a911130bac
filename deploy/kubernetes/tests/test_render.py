"""Every overlay renders with the lock file's kubectl (kustomize), every object it renders is valid
against the API schemas of the pinned Kubernetes release with unknown fields refused, and each
overlay holds what it promises: local the whole platform with its stores, production the
services only, three replicas each, behind network policies."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from .conftest import PROCESSES, SERVICES, STAND_INS, Rendered

KUBERNETES_VERSION = "1.37.0"
STORES = ("postgres", "redis", "rabbitmq", "couchbase")
OBSERVABILITY_WITH_DATA = ("prometheus", "grafana")


def test_every_object_is_valid_against_the_pinned_api_schemas(overlay: Rendered) -> None:
    problems = []
    for obj in overlay.objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            problems.append(f"{name}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{name}: {error.message}")
    assert not problems, "\n".join(problems)


def test_the_schema_check_refuses_an_unknown_field(overlays: dict[str, Rendered]) -> None:
    deployment = copy.deepcopy(overlays["production"].deployment("service-user"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["servce"] = ""
    with pytest.raises(kubernetes_validate.ValidationError, match="servce"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_everything_lands_in_one_namespace(overlay: Rendered) -> None:
    (namespace,) = overlay.of_kind("Namespace")
    name = namespace["metadata"]["name"]
    assert {
        o["metadata"].get("namespace") for o in overlay.objects if o["kind"] != "Namespace"
    } == {name}


def test_local_runs_the_platform_with_its_stores_and_observability(
    overlays: dict[str, Rendered],
) -> None:
    local = overlays["local"]
    for service in SERVICES:
        assert local.deployment(service)["spec"]["replicas"] == 2
    for stand_in in STAND_INS:
        assert local.deployment(stand_in)["spec"]["replicas"] == 1
    for name in (*STORES, *OBSERVABILITY_WITH_DATA):
        statefulset = local.get("StatefulSet", name)
        claims = [c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]]
        assert claims == ["data"], f"{name} keeps its data on a volume"
    local.get("Deployment", "jaeger")
    assert {job["metadata"]["name"] for job in local.of_kind("Job")} == {
        "couchbase-init",
        "platform-bootstrap",
        "product-seed",
    }
    assert not local.of_kind("NetworkPolicy"), "off locally: kind's default network may not enforce"


def test_production_runs_the_services_only_three_replicas_each_behind_policies(
    overlays: dict[str, Rendered],
) -> None:
    production = overlays["production"]
    assert {d["metadata"]["name"] for d in production.of_kind("Deployment")} == set(PROCESSES)
    assert not production.of_kind("StatefulSet")
    assert not production.of_kind("Secret"), "production references Secrets, never contains one"
    for service in SERVICES:
        assert production.deployment(service)["spec"]["replicas"] == 3
        hpa = production.get("HorizontalPodAutoscaler", service)["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    for stand_in in STAND_INS:
        assert production.deployment(stand_in)["spec"]["replicas"] == 1
    default_deny = production.get("NetworkPolicy", "default-deny")["spec"]
    assert default_deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    ingresses = production.of_kind("Ingress")
    assert len(ingresses) == 2
    for ingress in ingresses:
        (rule,) = ingress["spec"]["rules"]
        assert ingress["spec"]["tls"] == [
            {"hosts": [rule["host"]], "secretName": "ecommerce-tls"}
        ], "the public name is served over TLS"


def routes(overlay: Rendered) -> dict[tuple[str | None, str, str], str]:
    """(host, path, pathType) -> the Service it reaches on its `http` port, over every Ingress."""
    found = {}
    for ingress in overlay.of_kind("Ingress"):
        assert ingress["spec"]["ingressClassName"] == "nginx"
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["port"] == {"name": "http"}
                key = (rule.get("host"), path["path"], path["pathType"])
                assert key not in found, f"{key} is claimed twice"
                found[key] = backend["name"]
    return found


def test_the_shop_is_served_at_the_root_and_the_api_under_api_on_one_host(
    overlay: Rendered,
) -> None:
    by_path = {(path, kind): service for (_, path, kind), service in routes(overlay).items()}
    assert len({host for host, _, _ in routes(overlay)}) == 1, "one origin for shop and API"
    assert by_path == {
        ("/", "Prefix"): "web-storefront",
        ("/api", "Prefix"): "api-gateway",
        # The API's description and its browsable pages, which live beside /api on the gateway.
        ("/openapi.json", "Exact"): "api-gateway",
        ("/docs", "Exact"): "api-gateway",
        ("/redoc", "Exact"): "api-gateway",
        ("/docs-assets", "Prefix"): "api-gateway",
    }


def test_each_ingress_refuses_bodies_larger_than_its_process_accepts(
    overlay: Rendered,
) -> None:
    limits = {"api-gateway": "1m", "web-storefront": "64k"}  # GATEWAY_/STOREFRONT_MAX_BODY_BYTES
    for ingress in overlay.of_kind("Ingress"):
        name = ingress["metadata"]["name"]
        size = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
        assert size == limits[name]
        config = overlay.get("ConfigMap", name)["data"]
        variable = (
            "GATEWAY_MAX_BODY_BYTES" if name == "api-gateway" else "STOREFRONT_MAX_BODY_BYTES"
        )
        units = {"k": 1024, "m": 1024 * 1024}
        assert int(size[:-1]) * units[size[-1]] == int(config[variable])
