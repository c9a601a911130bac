"""Fixtures reading the Kubernetes manifests as data: every overlay rendered once per session with
the lock file's kubectl (render.py), and the objects looked up by kind and name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

KUBERNETES = Path(__file__).resolve().parents[1]
ROOT = KUBERNETES.parents[1]
# The processes the manifests deploy, by repository folder (test_consistency.py maps each to the
# settings class its process loads).
SERVICES = (
    "api-gateway",
    "service-user",
    "service-product",
    "service-cart",
    "service-order",
    "service-payment",
    "web-storefront",
)
# Processes that stand in for a system outside the platform (the simulated payment provider,
# which only service-payment calls, over HTTP): held to the same settings, ports, credentials and
# pod security as the services, but one replica each, with no PDB and no HPA.
STAND_INS = ("payment-provider",)
PROCESSES = SERVICES + STAND_INS
# The image a process runs is its folder's (ecommerce/<folder>, <folder>/Dockerfile), or, for a
# second entry point of a service's package, that service's.
IMAGE_FOLDERS = {"payment-provider": "service-payment"}
# The processes that answer HTTP behind the Ingress (the others answer gRPC in the cluster).
HTTP_SERVICES = ("api-gateway", "web-storefront")
GRPC_SERVICES = tuple(s for s in SERVICES if s not in HTTP_SERVICES)


def image_folder(process: str) -> str:
    return IMAGE_FOLDERS.get(process, process)


Obj = dict[str, Any]


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Rendered:
    """One overlay's objects."""

    def __init__(self, name: str, objects: list[Obj]) -> None:
        self.name = name
        self.objects = objects

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert found, f"overlays/{self.name}: no {kind} {name}"
        return found[0]

    def find(self, kind: str, name: str) -> Obj | None:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        return found[0] if found else None

    def deployment(self, service: str) -> Obj:
        return self.get("Deployment", service)


@pytest.fixture(scope="session")
def render_module() -> ModuleType:
    return load_module("k8s_render", KUBERNETES / "render.py")


@pytest.fixture(scope="session")
def overlays(render_module: ModuleType) -> dict[str, Rendered]:
    return {name: Rendered(name, objs) for name, objs in render_module.render_all().items()}


@pytest.fixture(scope="session", params=["local", "production", "local-network-policies"])
def overlay(request: pytest.FixtureRequest, overlays: dict[str, Rendered]) -> Rendered:
    return overlays[request.param]
