"""What every service image promises: it runs the package's own entry point as a non-root user,
answers a healthcheck on the port the service listens on, installs only its own packages from the
lock, and its Dockerfile is the one template every service shares."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from api_gateway.config import GatewaySettings
from cart_service.settings import CartSettings
from chassis.health_probe import expand
from order_service.settings import OrderSettings
from payment_provider.settings import ProviderSettings
from payment_service.settings import PaymentSettings
from product_service.settings import ProductSettings
from user_service.settings import UserSettings
from web_storefront.settings import StorefrontSettings

# Ports the images expose and the compose healthchecks probe, by compose service name.
GRPC_SERVICES = {
    "service-user": UserSettings,
    "service-product": ProductSettings,
    "service-cart": CartSettings,
    "service-order": OrderSettings,
    "service-payment": PaymentSettings,
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


def test_the_payment_provider_runs_its_entry_point_of_service_payments_image(
    services: dict[str, dict[str, Any]], pyprojects: dict[str, dict[str, Any]]
) -> None:
    provider, payment = services["payment-provider"], services["service-payment"]
    assert provider["image"] == payment["image"]
    assert provider["build"] == payment["build"]
    assert provider["command"] == ["payment-provider"]
    assert provider["command"][0] in pyprojects["service-payment"]["project"]["scripts"]
    # The image's HEALTHCHECK probes service-payment's gRPC port: the provider's is its own.
    port = ProviderSettings.model_fields["port"].default
    target = f"http://127.0.0.1:${{{_alias(ProviderSettings, 'port')}:-{port}}}/readyz"
    compose_probe = ["CMD", "python", "-m", "chassis.health_probe", expand(target, {})]
    assert provider["healthcheck"]["test"] == compose_probe
    environment = provider["environment"]
    assert str(environment[_alias(ProviderSettings, "port")]) == str(port)
    provider_url = payment["environment"][_alias(PaymentSettings, "provider_url")]
    assert provider_url == f"http://payment-provider:{port}"


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


def _probe(dockerfile: str) -> list[str]:
    return _exec_form(_instruction(_final_stage(dockerfile), "HEALTHCHECK").split(" CMD ", 1)[1])


def _alias(settings: type[BaseSettings], field: str) -> str:
    return str(settings.model_fields[field].validation_alias)


@pytest.mark.parametrize("name", sorted(GRPC_SERVICES))
def test_grpc_images_expose_and_probe_the_ports_the_service_listens_on(
    name: str, dockerfiles: dict[str, str], services: dict[str, dict[str, Any]]
) -> None:
    settings = GRPC_SERVICES[name]
    fields = settings.model_fields
    grpc_port, metrics_port = fields["grpc_port"].default, fields["metrics_port"].default
    final = _final_stage(dockerfiles[name])
    assert _instruction(final, "EXPOSE").split() == [str(grpc_port), str(metrics_port)]
    # The probe follows the port variable the service reads, so a container given another port
    # is still probed where it listens.
    variable = _alias(settings, "grpc_port")
    target = f"127.0.0.1:${{{variable}:-{grpc_port}}}"
    assert _probe(dockerfiles[name]) == ["python", "-m", "chassis.health_probe", target]
    compose_probe = ["CMD", "python", "-m", "chassis.health_probe", expand(target, {})]
    assert services[name]["healthcheck"]["test"] == compose_probe


def test_the_gateway_image_exposes_and_probes_its_http_port(
    dockerfiles: dict[str, str], services: dict[str, dict[str, Any]]
) -> None:
    port = GatewaySettings.model_fields["port"].default
    final = _final_stage(dockerfiles["api-gateway"])
    assert _instruction(final, "EXPOSE") == str(port)
    target = f"http://127.0.0.1:${{{_alias(GatewaySettings, 'port')}:-{port}}}/readyz"
    assert _probe(dockerfiles["api-gateway"]) == ["python", "-m", "chassis.health_probe", target]
    compose_probe = ["CMD", "python", "-m", "chassis.health_probe", expand(target, {})]
    assert services["api-gateway"]["healthcheck"]["test"] == compose_probe


def test_the_storefront_image_exposes_and_probes_its_http_port(
    dockerfiles: dict[str, str], services: dict[str, dict[str, Any]]
) -> None:
    port = StorefrontSettings.model_fields["port"].default
    final = _final_stage(dockerfiles["web-storefront"])
    assert _instruction(final, "EXPOSE") == str(port)
    target = f"http://127.0.0.1:${{{_alias(StorefrontSettings, 'port')}:-{port}}}/readyz"
    assert _probe(dockerfiles["web-storefront"]) == [
        "python",
        "-m",
        "chassis.health_probe",
        target,
    ]
    compose_probe = ["CMD", "python", "-m", "chassis.health_probe", expand(target, {})]
    assert services["web-storefront"]["healthcheck"]["test"] == compose_probe


def test_no_dockerfile_names_another_workspace_member(
    dockerfiles: dict[str, str],
    built_services: dict[str, str],
    pyprojects: dict[str, dict[str, Any]],
) -> None:
    # The lock is read from a bind mount of the whole workspace: adding a member (a new service)
    # changes no other service's Dockerfile.
    members = pyprojects["."]["tool"]["uv"]["workspace"]["members"]
    for name, dockerfile in dockerfiles.items():
        for member in set(members) - {built_services[name]}:
            assert f"{member}/" not in dockerfile, f"{name} names {member}"
            assert f"--package {member}" not in dockerfile, f"{name} installs {member}"


def test_every_dockerfile_is_one_template_with_its_own_name_ports_probe_and_command(
    dockerfiles: dict[str, str], built_services: dict[str, str]
) -> None:
    # A new service's Dockerfile is a copy of another with its name, ports, probe and entry
    # point changed, and nothing else.
    def template(name: str) -> str:
        text = re.sub(r"\\\n\s*", " ", dockerfiles[name]).replace(built_services[name], "<service>")
        return re.sub(r"^(EXPOSE|HEALTHCHECK|CMD) .*$", r"\1 ...", text, flags=re.MULTILINE)

    reference = template("service-user")
    for name in dockerfiles:
        assert template(name) == reference, f"{name} differs from service-user beyond its own"


def test_every_image_installs_only_its_own_package_from_the_lock(
    dockerfiles: dict[str, str], built_services: dict[str, str]
) -> None:
    for name, dockerfile in dockerfiles.items():
        exports = re.findall(r"uv export ([^\n\\]+)", dockerfile)
        syncs = re.findall(r"uv sync ([^\n\\]+)", dockerfile)
        assert len(exports) == 1, name
        assert len(syncs) == 1, name
        for flags in (*exports, *syncs):
            assert "--frozen" in flags, name
            assert "--no-dev" in flags, name
            assert f"--package {built_services[name]}" in flags, name
        # Members installed as wheels: the runtime needs no source folder beside the venv.
        assert "--no-editable" in syncs[0], name
        assert "--require-hashes" in dockerfile, name


def test_every_build_needs_only_the_base_image_and_the_package_index(
    dockerfiles: dict[str, str],
) -> None:
    # No `# syntax=` frontend to pull, no image but the Python base: the build runs where no
    # image registry can be reached, once the base image is there.
    for name, dockerfile in dockerfiles.items():
        assert "# syntax=" not in dockerfile, name
        stages = re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, flags=re.MULTILINE)
        assert len(stages) == dockerfile.count("\nFROM "), f"{name}: every stage is named"
        names = {stage for _, stage in stages}
        for base, _ in stages:
            assert base == "${PYTHON_IMAGE}" or base in names, f"{name}: FROM {base}"
        for source in re.findall(r"--from=(\S+)", dockerfile):
            assert source in names, f"{name}: COPY --from={source}"


def test_the_final_stage_carries_no_build_tooling(dockerfiles: dict[str, str]) -> None:
    for name, dockerfile in dockerfiles.items():
        final = _final_stage(dockerfile)
        for tooling in ("uv sync", "/uv", "apt-get", "pip install"):
            assert tooling not in final, f"{name}: {tooling}"
        assert re.findall(r"^COPY (.+)$", final, flags=re.MULTILINE) == [
            "--from=build /app/.venv /app/.venv"
        ], name


def test_every_image_has_a_state_directory_its_user_owns(
    dockerfiles: dict[str, str], built_services: dict[str, str]
) -> None:
    # A named volume mounted there (service-user's signing key) starts with this owner and mode.
    for name, dockerfile in dockerfiles.items():
        final = _final_stage(dockerfile)
        state = f"/var/lib/{built_services[name]}"
        assert f"install -d -o app -g app -m 0700 {state}" in final, name
        assert _instruction(final, "WORKDIR") == state, name
