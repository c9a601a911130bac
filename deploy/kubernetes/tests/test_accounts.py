"""Least privilege in the local overlay: the platform-bootstrap job makes exactly the accounts the
services' Secrets name (no more, no fewer), from the accounts file of deploy/accounts, through the
stores' administrators; no service logs in as an administrator or shares an account."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

import pytest

from chassis.accounts import BootstrapSettings, load_plan, resolve_accounts
from chassis.settings import AmqpSettings

from .conftest import PROCESSES, ROOT, Obj, Rendered
from .test_consistency import container, pod_environment, secret_data

STORE_URLS = {"POSTGRES_URL": "postgres", "REDIS_URL": "redis", "AMQP_URL": "rabbitmq"}
ACCOUNTS_COPY = ROOT / "deploy/kubernetes/overlays/local/accounts.toml"
REFERENCE = re.compile(r"\$\(([A-Z_][A-Z0-9_]*)\)")


def logins(environment: dict[str, str]) -> set[tuple[str, str, str]]:
    found = set()
    for variable, store in STORE_URLS.items():
        parts = urlsplit(environment.get(variable, ""))
        if parts.username:
            found.add((store, unquote(parts.username), unquote(parts.password or "")))
    return found


def job_environment(overlay: Rendered, job: Obj) -> dict[str, str]:
    """The job's environment: Secrets read with their prefixes, ConfigMap keys, and `$(VAR)`
    references expanded as the kubelet does."""
    spec = container(job)
    environment: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        data = secret_data(overlay, source["secretRef"]["name"])
        assert data is not None, source
        environment.update({source.get("prefix", "") + k: v for k, v in data.items()})
    for item in spec.get("env", []):
        if "value" in item:
            environment[item["name"]] = REFERENCE.sub(
                lambda match: environment[match[1]], item["value"]
            )
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            data = secret_data(overlay, ref["name"])
            assert data is not None, ref
            environment[item["name"]] = data[ref["key"]]
        else:
            ref = item["valueFrom"]["configMapKeyRef"]
            environment[item["name"]] = overlay.get("ConfigMap", ref["name"])["data"][ref["key"]]
    return environment


@pytest.fixture(scope="module")
def local(overlays: dict[str, Rendered]) -> Rendered:
    return overlays["local"]


def test_the_bootstrap_job_makes_exactly_the_accounts_the_secrets_name(
    local: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = local.get("Job", "platform-bootstrap")
    environment = job_environment(local, job)
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = BootstrapSettings()
    accounts = resolve_accounts(load_plan(ACCOUNTS_COPY), environment, settings, AmqpSettings())
    made = {
        *(("postgres", a.credentials.user, a.credentials.password) for a in accounts.postgres),
        *(("redis", a.credentials.user, a.credentials.password) for a in accounts.redis),
        *(("rabbitmq", a.credentials.user, a.credentials.password) for a in accounts.rabbitmq),
    }
    used = set().union(*(logins(pod_environment(local, service)) for service in PROCESSES))
    assert made == used
    # Each database is the one its service's ConfigMap names, owned by its own role.
    plan = load_plan(ACCOUNTS_COPY)
    owners = [access for access in plan if access.database is not None]
    assert {access.service for access in owners} <= set(PROCESSES)
    for access in owners:
        pod = pod_environment(local, access.service)
        prefix = access.variables
        role = unquote(urlsplit(pod["POSTGRES_URL"]).username or "")
        assert {(a.credentials.user, a.database) for a in accounts.postgres} >= {
            (role, pod[f"{prefix}_DB_NAME"])
        }
    # Through the stores' administrators, at the stores' Services.
    assert urlsplit(settings.postgres_admin_url).hostname == "postgres"
    assert urlsplit(settings.redis_admin_url).hostname == "redis"
    management = urlsplit(settings.rabbitmq_admin_url)
    assert (management.scheme, management.hostname, management.port) == ("http", "rabbitmq", 15672)


def test_no_service_logs_in_as_an_administrator_or_shares_an_account(local: Rendered) -> None:
    administrators = {
        "postgres": "postgres",
        "rabbitmq": (secret_data(local, _generated(local, "rabbitmq-admin")) or {})[
            "RABBITMQ_DEFAULT_USER"
        ],
    }
    owners: dict[tuple[str, str], str] = {}
    for service in PROCESSES:
        for store, user, _ in logins(pod_environment(local, service)):
            assert user not in (administrators.get(store), "default", "guest"), service
            assert owners.setdefault((store, user), service) == service, f"{service}: {user}"


def test_the_job_reads_the_accounts_file_of_deploy_accounts(local: Rendered) -> None:
    job = local.get("Job", "platform-bootstrap")
    spec = container(job)
    [mount] = [m for m in spec["volumeMounts"] if m["name"] == "accounts"]
    [volume] = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "accounts"]
    config = local.get("ConfigMap", volume["configMap"]["name"])["data"]
    path = {item["name"]: item.get("value") for item in spec["env"]}["ACCOUNTS_FILE"]
    assert path == f"{mount['mountPath']}/accounts.toml"
    original = (ROOT / "deploy/accounts/accounts.toml").read_text()
    assert config["accounts.toml"] == original, (
        "cp deploy/accounts/accounts.toml deploy/kubernetes/overlays/local/accounts.toml"
    )
    assert spec["image"].startswith("ecommerce/service-")  # the chassis's command is in it


def _generated(overlay: Rendered, name: str) -> str:
    """The name of a generated Secret (with its content hash)."""
    [found] = [
        s["metadata"]["name"]
        for s in overlay.of_kind("Secret")
        if re.fullmatch(rf"{name}(-[a-z0-9]{{10}})?", s["metadata"]["name"])
    ]
    return found
