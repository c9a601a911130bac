"""The manifests agree with the code they deploy, in every overlay: each service is given every
variable its settings class reads (and nothing it does not), loads its settings from exactly its
pod's environment, listens and is probed on the ports those settings say, calls the others by
headless `dns:///` names, gets its credentials from the Secrets of the contract only, and runs in
a pod a platform team accepts (resources, probes, drain, PDB, HPA, security context)."""

from __future__ import annotations

import base64
import os
import re

import pytest
import yaml
from pydantic_settings import BaseSettings

from api_gateway.config import GatewaySettings
from cart_service.settings import CartSettings
from order_service.settings import OrderSettings
from payment_provider.settings import ProviderSettings
from payment_service.settings import PaymentSettings
from product_service.settings import ProductSettings
from user_service.settings import UserSettings
from web_storefront.settings import StorefrontSettings

from .conftest import (
    GRPC_SERVICES,
    HTTP_SERVICES,
    PROCESSES,
    ROOT,
    SERVICES,
    STAND_INS,
    Obj,
    Rendered,
    image_folder,
)

SETTINGS: dict[str, type[BaseSettings]] = {
    "api-gateway": GatewaySettings,
    "service-user": UserSettings,
    "service-product": ProductSettings,
    "service-cart": CartSettings,
    "service-order": OrderSettings,
    "service-payment": PaymentSettings,
    "web-storefront": StorefrontSettings,
    "payment-provider": ProviderSettings,
}
# Where each HTTP process sets uvicorn's graceful shutdown (the gRPC services read theirs).
UVICORN_MAINS = {
    "api-gateway": "api-gateway/src/api_gateway/main.py",
    "web-storefront": "web-storefront/src/web_storefront/main.py",
    "payment-provider": "service-payment/src/payment_provider/main.py",
}
# Variables a service reads that the manifests leave unset on purpose, and why.
UNSET = {
    "service-user": {
        "JWT_PRIVATE_KEY_FILE": "the key is the Secret jwt-signing-key's, one for every replica",
    },
    "service-cart": {
        "REDIS_URL": "read by the Redis cart store only (CART_STORE=redis): an optional key of "
        "service-cart-credentials, absent where carts live in Couchbase",
    },
}
# The credentials contract: the keys of `<service>-credentials`, and the two shared Secrets.
CREDENTIAL_KEYS = {
    "POSTGRES_URL",
    "REDIS_URL",
    "AMQP_URL",
    "COUCHBASE_USERNAME",
    "COUCHBASE_PASSWORD",
}
SHARED_SECRETS = {
    "JWT_PRIVATE_KEY": "jwt-signing-key",
    "ADMIN_EMAIL": "admin-bootstrap",
    "ADMIN_PASSWORD": "admin-bootstrap",
}
# What production's Secrets hold, in shape (they are never rendered): managed stores over TLS.
PRODUCTION_SECRET_VALUES = {
    "POSTGRES_URL": "postgresql://svc:pw@db.example.internal:5432?sslmode=require",
    "REDIS_URL": "rediss://svc:pw@cache.example.internal:6380/0",
    "AMQP_URL": "amqps://svc:pw@broker.example.internal:5671/",
    "COUCHBASE_USERNAME": "carts",
    "COUCHBASE_PASSWORD": "pw-of-carts",
    "JWT_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n",
    "ADMIN_EMAIL": "admin@example.com",
    "ADMIN_PASSWORD": "a long admin password of its own",
}
LOOPBACK = re.compile(r"127\.0\.0\.1|localhost|\[::1\]")
DOCKERFILE_USER = re.compile(r"^USER (\d+):(\d+)\s*$", re.MULTILINE)


def variables(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads (an alias is the only name read)."""
    return {
        (field.validation_alias if isinstance(field.validation_alias, str) else name).upper()
        for name, field in cls.model_fields.items()
    }


def container(deployment: Obj) -> Obj:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    result: Obj = only
    return result


def secret_refs(deployment: Obj) -> dict[str, Obj]:
    """Variable -> its secretKeyRef."""
    return {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in container(deployment).get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }


def secret_data(overlay: Rendered, name: str) -> dict[str, str] | None:
    secret = overlay.find("Secret", name)
    if secret is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def pod_environment(overlay: Rendered, service: str) -> dict[str, str]:
    """The environment the service's process starts with: its ConfigMap(s) and env entries, the
    Secret values resolved (local renders its Secrets; production's are given their shape)."""
    spec = container(overlay.deployment(service))
    environment: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        environment.update(overlay.get("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in spec.get("env", []):
        if "value" in item:
            environment[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        if overlay.name == "production":
            environment[item["name"]] = PRODUCTION_SECRET_VALUES[ref["key"]]
            continue
        data = secret_data(overlay, ref["name"])
        if data is not None and ref["key"] in data:
            environment[item["name"]] = data[ref["key"]]
        else:
            assert ref.get("optional"), f"{service}: Secret {ref['name']} has no {ref['key']}"
    return environment


def load_in_pod(
    cls: type[BaseSettings], environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> BaseSettings:
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return cls()


def named_port(spec: Obj, name: str) -> int:
    (port,) = [p["containerPort"] for p in spec["ports"] if p["name"] == name]
    assert isinstance(port, int)
    return port


@pytest.mark.parametrize("service", PROCESSES)
def test_every_variable_a_service_reads_is_set_for_it(overlay: Rendered, service: str) -> None:
    given = set(pod_environment(overlay, service)) | set(secret_refs(overlay.deployment(service)))
    missing = variables(SETTINGS[service]) - given - set(UNSET.get(service, {}))
    assert missing == set(), f"overlays/{overlay.name}: {service} is not given {sorted(missing)}"


@pytest.mark.parametrize("service", PROCESSES)
def test_every_variable_set_for_a_service_is_one_it_reads(overlay: Rendered, service: str) -> None:
    given = set(pod_environment(overlay, service)) | set(secret_refs(overlay.deployment(service)))
    unread = given - variables(SETTINGS[service])
    assert unread == set(), f"{service} is given settings it never reads (a misspelt name?)"


@pytest.mark.parametrize("service", PROCESSES)
def test_each_service_loads_its_settings_from_its_pod_and_listens_where_it_is_probed(
    overlay: Rendered, service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = overlay.deployment(service)
    spec = container(deployment)
    settings = load_in_pod(SETTINGS[service], pod_environment(overlay, service), monkeypatch)
    values = settings.model_dump()
    # In a pod 127.0.0.1 is the pod itself: a local default left in place reaches nothing.
    unset = {name.lower() for name in UNSET.get(service, {})}
    loopback = {
        k: v
        for k, v in values.items()
        if isinstance(v, str) and LOOPBACK.search(v) and k not in unset
    }
    assert loopback == {}
    for host in ("grpc_host", "metrics_host", "host"):
        assert values.get(host, "0.0.0.0") == "0.0.0.0", f"{host}: the pod's address"
    public = "grpc" if service in GRPC_SERVICES else "http"
    port = values["grpc_port"] if service in GRPC_SERVICES else values["port"]
    assert named_port(spec, public) == port
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    if values["metrics_port"] == 0:  # no metrics endpoint (a stand-in): nothing to scrape
        assert service in STAND_INS, f"{service} serves metrics"
        assert "metrics" not in {p["name"] for p in spec["ports"]}
        assert "prometheus.io/scrape" not in annotations
    else:
        assert named_port(spec, "metrics") == values["metrics_port"]
        assert annotations["prometheus.io/port"] == str(values["metrics_port"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        action = spec[probe].get("grpc") or spec[probe]["httpGet"]
        assert action["port"] in (port, public), f"{probe} probes the port the process listens on"
    service_ports = {p["name"]: p for p in overlay.get("Service", service)["spec"]["ports"]}
    assert service_ports[public]["targetPort"] == public
    if values["metrics_port"] != 0:
        assert service_ports["metrics"]["targetPort"] == "metrics"
    if isinstance(settings, UserSettings):
        assert settings.admin_account_problem() is None
        assert settings.jwt_private_key is not None, "every replica signs with the Secret's key"


@pytest.mark.parametrize("service", PROCESSES)
def test_services_call_each_other_by_headless_dns_names_balanced_over_pods(
    overlay: Rendered, service: str
) -> None:
    environment = pod_environment(overlay, service)
    for name, value in environment.items():
        if not name.endswith("_SERVICE_ADDR"):
            continue
        callee = "service-" + name.removesuffix("_SERVICE_ADDR").lower()
        callee_port = container(overlay.deployment(callee))["ports"][0]["containerPort"]
        assert value == f"dns:///{callee}:{callee_port}", name
        assert overlay.get("Service", callee)["spec"]["clusterIP"] == "None", f"{callee}: headless"


@pytest.mark.parametrize("service", PROCESSES)
def test_credentials_come_only_from_the_secrets_of_the_contract(
    overlay: Rendered, service: str
) -> None:
    deployment = overlay.deployment(service)
    for variable, ref in secret_refs(deployment).items():
        assert ref["key"] == variable, "each Secret key is the variable it sets"
        expected = SHARED_SECRETS.get(variable, f"{service}-credentials")
        # The local overlay's generated Secrets carry a hash of their content after the name.
        assert re.fullmatch(rf"{expected}(-[a-z0-9]{{10}})?", ref["name"]), ref["name"]
        if variable not in SHARED_SECRETS:
            assert variable in CREDENTIAL_KEYS
    config = overlay.get("ConfigMap", service)["data"]
    leaked = {k for k in config if k in CREDENTIAL_KEYS | set(SHARED_SECRETS)}
    assert leaked == set(), "credentials never sit in a ConfigMap"


@pytest.mark.parametrize("service", PROCESSES)
def test_every_pod_is_one_a_platform_team_accepts(overlay: Rendered, service: str) -> None:
    deployment = overlay.deployment(service)
    pod = deployment["spec"]["template"]["spec"]
    spec = container(deployment)
    for kind in ("requests", "limits"):
        assert set(spec["resources"][kind]) == {"cpu", "memory"}, kind
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == service
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = spec["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    writable = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    assert {m["name"] for m in spec.get("volumeMounts", [])} <= writable, "emptyDir only"


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_disrupted_one_pod_at_a_time_and_scales_on_cpu(
    overlay: Rendered, service: str
) -> None:
    deployment = overlay.deployment(service)
    selector = deployment["spec"]["selector"]["matchLabels"]
    (pdb,) = [
        p
        for p in overlay.of_kind("PodDisruptionBudget")
        if p["spec"]["selector"]["matchLabels"] == selector
    ]
    assert pdb["spec"]["maxUnavailable"] == 1
    (hpa,) = [
        h
        for h in overlay.of_kind("HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"] == service
    ]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


@pytest.mark.parametrize("stand_in", STAND_INS)
def test_a_stand_in_runs_one_pod_that_nothing_scales(overlay: Rendered, stand_in: str) -> None:
    deployment = overlay.deployment(stand_in)
    assert deployment["spec"]["replicas"] == 1
    assert overlay.find("HorizontalPodAutoscaler", stand_in) is None
    assert overlay.find("PodDisruptionBudget", stand_in) is None
    # A restart never leaves it without a ready pod.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_service_payment_calls_the_provider_by_its_service_on_its_http_port(
    overlay: Rendered,
) -> None:
    url = pod_environment(overlay, "service-payment")["PAYMENT_PROVIDER_URL"]
    provider = {
        p["name"]: p["port"] for p in overlay.get("Service", "payment-provider")["spec"]["ports"]
    }
    assert url == f"http://payment-provider:{provider['http']}"


def test_the_storefront_calls_the_gateway_by_its_service_on_its_public_port(
    overlay: Rendered,
) -> None:
    url = pod_environment(overlay, "web-storefront")["GATEWAY_URL"]
    gateway_port = {
        p["name"]: p["port"] for p in overlay.get("Service", "api-gateway")["spec"]["ports"]
    }
    assert url == f"http://api-gateway:{gateway_port['http']}"


@pytest.mark.parametrize("service", GRPC_SERVICES)
def test_grpc_services_are_probed_on_liveness_for_restarts_and_on_health_for_traffic(
    overlay: Rendered, service: str
) -> None:
    spec = container(overlay.deployment(service))
    # `liveness` stays SERVING through a store's outage; "" follows readiness
    # (chassis.grpc_server.LIVENESS_SERVICE).
    assert spec["livenessProbe"]["grpc"]["service"] == "liveness"
    assert spec["startupProbe"]["grpc"]["service"] == "liveness"
    assert spec["readinessProbe"]["grpc"]["service"] == ""


@pytest.mark.parametrize("service", [*HTTP_SERVICES, *STAND_INS])
def test_http_processes_are_probed_on_healthz_and_readyz(
    overlays: dict[str, Rendered], service: str
) -> None:
    spec = container(overlays["production"].deployment(service))
    assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"


def drain_seconds(service: str, config: dict[str, str]) -> float:
    """How long the process may take to drain after SIGTERM, as its code or settings say."""
    if service in UVICORN_MAINS:
        main = (ROOT / UVICORN_MAINS[service]).read_text()
        match = re.search(r"timeout_graceful_shutdown\W{1,4}(\d+)", main)
        assert match is not None, f"uvicorn's graceful shutdown is set in {UVICORN_MAINS[service]}"
        # The gateway's own drain (readyz 503 while still serving) comes before uvicorn's.
        return float(config.get("GATEWAY_SHUTDOWN_DRAIN_DELAY_SECONDS", 0)) + float(match[1])
    return float(config.get("SHUTDOWN_DRAIN_DELAY_SECONDS", 0)) + float(
        config["SHUTDOWN_GRACE_SECONDS"]
    )


@pytest.mark.parametrize("service", PROCESSES)
def test_termination_grace_covers_the_pre_stop_pause_and_the_drain(
    overlay: Rendered, service: str
) -> None:
    deployment = overlay.deployment(service)
    pause = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 3, "endpoints drop the pod before SIGTERM"
    drain = drain_seconds(service, overlay.get("ConfigMap", service)["data"])
    # The drain, then the shutdown hooks (closing pools, the broker) within the margin.
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= pause + drain + 10


@pytest.mark.parametrize("service", PROCESSES)
def test_pods_run_as_the_user_their_image_was_built_for(overlay: Rendered, service: str) -> None:
    folder = image_folder(service)
    match = DOCKERFILE_USER.search((ROOT / folder / "Dockerfile").read_text())
    assert match is not None, f"{folder}/Dockerfile: USER uid:gid"
    context = overlay.deployment(service)["spec"]["template"]["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(match[1]), int(match[2]))


def compose_images() -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose-environment/docker-compose.yml").read_text())
    return {
        name: service["image"]
        for name, service in compose["services"].items()
        if "build" in service and name in PROCESSES
    }


@pytest.mark.parametrize("service", PROCESSES)
def test_images_are_the_ones_compose_and_check_images_build(
    overlay: Rendered, service: str
) -> None:
    image = container(overlay.deployment(service))["image"]
    compose_name, _, compose_tag = compose_images()[service].partition(":")
    name, _, tag = image.partition(":")
    assert name == compose_name == f"ecommerce/{image_folder(service)}"
    if overlay.name != "production":
        assert compose_tag == "${IMAGE_TAG:-local}"
        assert tag == "local", "the tag compose builds by default, loaded into kind as it is"


def test_no_secret_value_appears_in_any_other_object(overlays: dict[str, Rendered]) -> None:
    local = overlays["local"]
    values = {
        value
        for secret in local.of_kind("Secret")
        for key, value in (secret_data(local, secret["metadata"]["name"]) or {}).items()
        if not re.search(r"USER|EMAIL", key)  # names, not secrets
    }
    assert len(values) >= 10, "the local overlay renders its generated Secrets"
    for obj in local.objects:
        if obj["kind"] == "Secret":
            continue
        text = yaml.safe_dump(obj)
        found = [v[:6] + "..." for v in values if v in text]
        assert not found, f"{obj['kind']}/{obj['metadata']['name']} holds a Secret's value"


def test_no_committed_manifest_holds_a_credential() -> None:
    kubernetes = ROOT / "deploy/kubernetes"
    skipped = (kubernetes / "overlays/local/secrets", kubernetes / "tests")
    for path in kubernetes.rglob("*"):
        if not path.is_file() or any(folder in path.parents for folder in skipped):
            continue
        if path.suffix not in (".yaml", ".yml", ".json", ".conf", ".sh", ".md", ".py", ""):
            continue
        text = path.read_text()
        assert "PRIVATE KEY-----" not in text, path
        # A URL with a password in it (scheme://user:password@host), not a shell variable.
        assert not re.search(r"://[^/\s:@$]*:[^@\s$]+@", text), path


def test_the_local_secret_files_stay_out_of_git() -> None:
    ignore = (ROOT / "deploy/kubernetes/overlays/local/secrets/.gitignore").read_text()
    rules = [line for line in ignore.splitlines() if line and not line.startswith("#")]
    assert rules == ["*", "!.gitignore", "!README.md"]


COPIED_FROM_COMPOSE = {
    "overlays/local/stores/rabbitmq.conf": "rabbitmq/rabbitmq.conf",
    "overlays/local/stores/enabled_plugins": "rabbitmq/enabled_plugins",
    "overlays/local/stores/init-cluster.sh": "couchbase/init-cluster.sh",
    "overlays/local/stores/start-redis.sh": "redis/start-redis.sh",
    "overlays/local/observability/alerts.yml": "prometheus/alerts.yml",
    "overlays/local/observability/platform.json": "grafana/dashboards/platform.json",
    "overlays/local/observability/dashboards.yml": "grafana/provisioning/dashboards/dashboards.yml",
}


@pytest.mark.parametrize("copy", sorted(COPIED_FROM_COMPOSE))
def test_the_local_overlay_uses_composes_own_configuration(copy: str) -> None:
    # Kustomize reads files under the kustomization only, hence copies: they must not drift.
    original = ROOT / "docker-compose-environment" / COPIED_FROM_COMPOSE[copy]
    assert (ROOT / "deploy/kubernetes" / copy).read_bytes() == original.read_bytes(), (
        f"cp {original.relative_to(ROOT)} deploy/kubernetes/{copy}"
    )
