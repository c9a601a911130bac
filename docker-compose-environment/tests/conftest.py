"""Fixtures reading the compose environment's files as data (no Docker needed)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ENVIRONMENT = Path(__file__).resolve().parents[1]
ROOT = ENVIRONMENT.parent

# Services built from this repository, with the folder holding their Dockerfile and pyproject
# (payment-provider, the simulated payment provider, is the second entry point of service-payment's
# image).
BUILT_SERVICES = {
    "service-user": "service-user",
    "service-product": "service-product",
    "service-cart": "service-cart",
    "service-order": "service-order",
    "service-payment": "service-payment",
    "payment-provider": "service-payment",
    "api-gateway": "api-gateway",
    "web-storefront": "web-storefront",
}
ONE_SHOT_JOBS = {
    "couchbase-init",
    "platform-bootstrap",
    "product-seed",
    "kibana-init",
    "loadgenerator",
}


@pytest.fixture(scope="session")
def environment_dir() -> Path:
    return ENVIRONMENT


@pytest.fixture(scope="session")
def built_services() -> dict[str, str]:
    """Compose service name -> repository folder with its Dockerfile and pyproject."""
    return BUILT_SERVICES


@pytest.fixture(scope="session")
def one_shot_jobs() -> set[str]:
    return ONE_SHOT_JOBS


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ENVIRONMENT / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="session")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


@pytest.fixture(scope="session")
def infra_override() -> dict[str, Any]:
    """compose.infra.yml: the infrastructure's ports for a service run from the workspace."""
    data: dict[str, Any] = yaml.safe_load((ENVIRONMENT / "compose.infra.yml").read_text())
    return data


@pytest.fixture(scope="session")
def env_example() -> str:
    return (ENVIRONMENT / ".env.example").read_text()


@pytest.fixture(scope="session")
def prometheus_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ENVIRONMENT / "prometheus/prometheus.yml").read_text())
    return data


@pytest.fixture(scope="session")
def pyprojects() -> dict[str, dict[str, Any]]:
    """Every workspace member's pyproject, by folder, plus the root's under "."."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = root["tool"]["uv"]["workspace"]["members"]
    result = {
        folder: tomllib.loads((ROOT / folder / "pyproject.toml").read_text()) for folder in members
    }
    result["."] = root
    return result


@pytest.fixture(scope="session")
def dockerfiles() -> dict[str, str]:
    """Dockerfile text by compose service name."""
    return {
        name: (ROOT / folder / "Dockerfile").read_text() for name, folder in BUILT_SERVICES.items()
    }
