"""What every service image promises: it runs the package's own entry point as a non-root user,
answers a healthcheck on the port the service listens on, and builds from the whole workspace."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from api_gateway.config import GatewaySettings
from cart_service.settings import CartSettings
from product_service.settings import ProductSettings
from user_service.settings import UserSettings

# Ports the images expose and the compose healthchecks probe, by compose service name.
GRPC_SERVICES = {
    "service-user": UserSettings,
    "service-product": ProductSettings,
    "service-cart": CartSettings,
}


def _final_stage(dockerfile: str) -> str:
    return dockerfile.rsplit("\nFROM ", 1)[1]


def _instruction(stage: str, name: str) -> str:
    """The arguments of the last `name` instruction in `stage`, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", stage)
    matches = re.findall(rf"^{name} (.+)$", joined, flags=re.MULTILINE)
    assert matches, f"no {name} instruction"
    return str(matches[-1]).strip()


def _exec_form(arguments: str) -> list[str]:
    value: list[str] = json.loads(arguments)
    return value


def test_every_image_runs_an_entry_point_its_package_declares(
    dockerfiles: dict[str, str],
    built_services: dict[str, str],
    pyprojects: dict[str, dict[str, Any]],
) -> None:
    for name, dockerfile in dockerfiles.items():
        command = _exec_form(_instruction(_final_stage(dockerfile), "CMD"))
        scripts = pyprojects[built_services[name]]["project"]["scripts"]
        assert command[0] in scripts, f"{name}: {command[0]} is not in [project.scripts]"


def test_the_seed_job_runs_an_entry_point_of_service_product(
    services: dict[str, dict[str, Any]], pyprojects: dict[str, dict[str, Any]]
) -> None:
    command = services["product-seed"]["command"]
    assert command[0] in pyprojects["service-product"]["project"]["scripts"]


def test_every_image_runs_as_a_numeric_non_root_user(dockerfiles: dict[str, str]) -> None:
    for name, dockerfile in dockerfiles.items():
        user = _instruction(_final_stage(dockerfile), "USER")
        uid, _, gid = user.partition(":")
        assert uid.isdigit(), name
        assert gid.isdigit(), name
        assert int(uid) > 0, name
        assert int(gid) > 0, name


def test_every_image_stops_on_sigterm_and_has_a_healthcheck(dockerfiles: dict[str, str]) -> None:
    for name, dockerfile in dockerfiles.items():
        final = _final_stage(dockerfile)
        assert _instruction(final, "STOPSIGNAL") == "SIGTERM", name
        healthcheck = _instruction(final, "HEALTHCHECK")
        command = _exec_form(healthcheck.split(" CMD ", 1)[1])
        assert command[0] == "python", name


@pytest.mark.parametrize("name", sorted(GRPC_SERVICES))
def test_grpc_images_expose_and_probe_the_ports_the_service_listens_on(
    name: str, dockerfiles: dict[str, str], services: dict[str, dict[str, Any]]
) -> None:
    fields = GRPC_SERVICES[name].model_fields
    grpc_port, metrics_port = fields["grpc_port"].default, fields["metrics_port"].default
    final = _final_stage(dockerfiles[name])
    assert _instruction(final, "EXPOSE").split() == [str(grpc_port), str(metrics_port)]
    probe = ["python", "-m", "chassis.health_probe", f"127.0.0.1:{grpc_port}"]
    assert _exec_form(_instruction(final, "HEALTHCHECK").split(" CMD ", 1)[1]) == probe
    assert services[name]["healthcheck"]["test"] == ["CMD", *probe]


def test_the_gateway_image_exposes_and_probes_its_http_port(
    dockerfiles: dict[str, str], services: dict[str, dict[str, Any]]
) -> None:
    port = GatewaySettings.model_fields["port"].default
    final = _final_stage(dockerfiles["api-gateway"])
    assert _instruction(final, "EXPOSE") == str(port)
    assert "/readyz" in _instruction(final, "HEALTHCHECK")
    compose_probe = services["api-gateway"]["healthcheck"]["test"]
    assert f"http://127.0.0.1:{port}/readyz" in compose_probe[-1]


def test_every_image_copies_the_pyproject_of_every_workspace_member(
    dockerfiles: dict[str, str], pyprojects: dict[str, dict[str, Any]]
) -> None:
    # uv reads the lock only with the whole workspace present; a member added to the root
    # pyproject must be added to every Dockerfile too.
    members = pyprojects["."]["tool"]["uv"]["workspace"]["members"]
    for name, dockerfile in dockerfiles.items():
        for member in members:
            assert f"COPY {member}/pyproject.toml {member}/" in dockerfile, f"{name}: {member}"


def test_every_image_installs_only_its_own_package_from_the_lock(
    dockerfiles: dict[str, str], built_services: dict[str, str]
) -> None:
    for name, dockerfile in dockerfiles.items():
        syncs = re.findall(r"uv sync ([^\n\\]+)", dockerfile)
        assert len(syncs) == 2, name
        for flags in syncs:
            assert "--frozen" in flags, name
            assert "--no-dev" in flags, name
            assert f"--package {built_services[name]}" in flags, name


def test_the_final_stage_carries_no_build_tooling(dockerfiles: dict[str, str]) -> None:
    for name, dockerfile in dockerfiles.items():
        final = _final_stage(dockerfile)
        for tooling in ("uv sync", "/uv", "apt-get", "pip install"):
            assert tooling not in final, f"{name}: {tooling}"
