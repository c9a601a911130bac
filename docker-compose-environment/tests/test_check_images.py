"""What check_images.py assumes of the services, checked without Docker: it finds every image the
compose file builds, and the variables it derives from each HEALTHCHECK's port variable are the
ones the services read, so every container listens, migrates and connects where the run says."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic_settings import BaseSettings

from api_gateway.config import GatewaySettings
from cart_service.settings import CartSettings
from order_service.settings import OrderSettings
from payment_service.settings import PaymentSettings
from product_service.settings import ProductSettings
from user_service.settings import UserSettings

SETTINGS: dict[str, type[BaseSettings]] = {
    "service-user": UserSettings,
    "service-product": ProductSettings,
    "service-cart": CartSettings,
    "service-order": OrderSettings,
    "service-payment": PaymentSettings,
    "api-gateway": GatewaySettings,
}


@pytest.fixture(scope="module")
def check_images(environment_dir: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_images", environment_dir / "check_images.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_images"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_it_finds_every_image_the_compose_file_builds(
    check_images: ModuleType, built_services: dict[str, str]
) -> None:
    assert {service.folder for service in check_images.discover()} == set(built_services.values())


@pytest.mark.parametrize("folder", sorted(SETTINGS))
def test_each_container_reads_the_ports_database_and_addresses_the_run_gives_it(
    folder: str, check_images: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = check_images.Run(check_images.discover(), docker="docker")
    environment = run.environment()
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = SETTINGS[folder]()
    (service,) = [s for s in run.services if s.folder == folder]
    values = settings.model_dump()
    if service.grpc:
        assert values["grpc_port"] == run.ports[service.port_variable]
        assert values["metrics_port"] == run.ports[f"{service.prefix}_METRICS_PORT"]
    else:
        assert values["port"] == run.ports[service.port_variable]
    if "db_name" in values:
        assert values["db_name"].startswith(run.run_id), "a database of the run, never the default"
    for name, value in values.items():
        if name.endswith("_service_addr"):
            callee = f"{name.removesuffix('_service_addr').upper()}_GRPC_PORT"
            assert value == f"127.0.0.1:{run.ports[callee]}", name
    assert values.get("events_exchange", run.run_id).startswith(run.run_id)
    assert values.get("redis_key_prefix", run.run_id).startswith(run.run_id)
    for name in ("grpc_host", "metrics_host", "host"):
        assert values.get(name, "127.0.0.1") == "127.0.0.1", f"{name}: loopback on the host network"


def test_a_run_gives_every_port_once(check_images: ModuleType) -> None:
    run = check_images.Run(check_images.discover(), docker="docker")
    run.environment()
    assert len(set(run.ports.values())) == len(run.ports)


@pytest.mark.parametrize("folder", sorted(SETTINGS))
def test_each_container_runs_as_its_kubernetes_pod_does(
    folder: str, check_images: ModuleType
) -> None:
    run = check_images.Run(check_images.discover(), docker="docker")
    (service,) = [s for s in run.services if s.folder == folder]
    command = check_images.run_arguments(run, service, run.environment())
    assert command[-1] == run.image(service)
    options = " ".join(command[:-1])
    assert "--read-only" in command
    assert "--cap-drop ALL" in options
    assert "--security-opt no-new-privileges" in options
    assert "--user 10001:10001" in options  # the pod's runAsUser:runAsGroup
    tmpfs = [command[i + 1] for i, arg in enumerate(command) if arg == "--tmpfs"]
    assert tmpfs == ["/tmp:rw,exec,nosuid,size=16m"]  # the pod's only emptyDir


def test_a_pod_mounting_anything_but_an_emptydir_is_refused(
    check_images: ModuleType, tmp_path: Path
) -> None:
    folder = tmp_path / "service-x"
    folder.mkdir()
    (folder / "deployment.yaml").write_text(
        """
spec:
  template:
    spec:
      securityContext: {runAsUser: 10001, runAsGroup: 10001}
      containers:
        - name: service-x
          securityContext:
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
          volumeMounts: [{name: state, mountPath: /var/lib/service-x}]
      volumes: [{name: state, persistentVolumeClaim: {claimName: state}}]
"""
    )
    service = check_images.Service("service-x", "X_GRPC_PORT")
    with pytest.raises(SystemExit, match="no emptyDir"):
        check_images.pod_security_arguments(service, tmp_path)
