"""The settings the deployment and the docs name are the ones the services read: every variable a
container gets, every line of the root `.env.example` and every row of a service README's settings
table exists in that service's settings class, with the default the code uses."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from api_gateway.config import GatewaySettings
from cart_service.settings import CartSettings
from chassis.accounts import BootstrapSettings
from chassis.settings import AmqpSettings
from order_service.settings import OrderSettings
from payment_provider.settings import ProviderSettings
from payment_service.settings import PaymentSettings
from product_service.settings import ProductSettings
from user_service.settings import UserSettings
from web_storefront.settings import StorefrontSettings

ROOT = Path(__file__).resolve().parents[2]

# Compose service (and repository folder) -> the settings class its process loads.
SETTINGS: dict[str, type[BaseSettings]] = {
    "service-user": UserSettings,
    "service-product": ProductSettings,
    "product-seed": ProductSettings,
    "service-cart": CartSettings,
    "service-order": OrderSettings,
    "service-payment": PaymentSettings,
    "payment-provider": ProviderSettings,
    "api-gateway": GatewaySettings,
    "web-storefront": StorefrontSettings,
}
# Handed to every container alike (test_compose.py); a service may ignore some of them.
SHARED = {
    "POSTGRES_URL",
    "REDIS_URL",
    "AMQP_URL",
    "EVENTS_EXCHANGE",
    "GRPC_HOST",
    "METRICS_HOST",
    "LOG_LEVEL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "ADMIN_EMAIL",
    "ADMIN_PASSWORD",
}
# A folder whose README documents more than one process: each settings class it runs.
README_SETTINGS: dict[str, tuple[type[BaseSettings], ...]] = {
    "service-payment": (PaymentSettings, ProviderSettings),
}
# Root .env.example lines that are deliberately not the code default (the file says why).
LOCAL_OVERRIDES = {"JWT_PRIVATE_KEY_FILE", "CART_STORE"}
# `${NAME:-default}` / `${NAME-default}` / `${NAME}` in the compose file; `$$` is a literal dollar.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)(?::?-([^}]*))?\}")
ASSIGNMENT = re.compile(r"^(#? ?)([A-Z][A-Z0-9_]*)=(.*)$", flags=re.MULTILINE)


def variables(cls: type[BaseSettings]) -> dict[str, Any]:
    """Environment variable -> default, as the class reads it (an alias is the only name read)."""
    result: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else name
        default = field.default
        result[alias.upper()] = (
            default.get_secret_value() if isinstance(default, SecretStr) else default
        )
    return result


def shows_default(default: Any, text: str) -> bool:
    if default is None:
        return text in ("", "unset")
    if isinstance(default, bool):
        return text.lower() == str(default).lower()
    if isinstance(default, int | float):
        try:
            return float(text) == float(default)
        except ValueError:
            return False
    if isinstance(default, Path):
        return (ROOT / text).resolve() == default.resolve()
    return str(default) == text


def interpolate(value: str, values: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        return values.get(match[1], match[2] or "")

    return INTERPOLATION.sub(substitute, value).replace("$$", "$")


def env_file(path: Path) -> dict[str, str]:
    return {
        name: value for prefix, name, value in ASSIGNMENT.findall(path.read_text()) if not prefix
    }


def load_in_container(
    cls: type[BaseSettings], environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> BaseSettings:
    """The settings the process would load with exactly this environment and nothing else."""
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return cls()


def container_environment(service: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    return {
        name: interpolate(str(value), values)
        for name, value in service.get("environment", {}).items()
    }


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_every_variable_a_container_gets_is_one_its_service_reads(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    readable = set(variables(SETTINGS[name]))
    unread = set(services[name].get("environment", {})) - readable - SHARED
    assert unread == set(), f"{name} is given settings it never reads (a misspelt name?)"


@pytest.mark.parametrize("source", ["defaults", ".env.example"])
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_service_loads_its_settings_in_its_container_and_points_at_no_loopback(
    name: str,
    source: str,
    services: dict[str, dict[str, Any]],
    environment_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = env_file(environment_dir / ".env.example") if source == ".env.example" else {}
    environment = container_environment(services[name], values)
    settings = load_in_container(SETTINGS[name], environment, monkeypatch)
    # Inside a container 127.0.0.1 is the container itself: a setting left at its local default
    # would make the service talk to nothing (or a bind address would hide it from the network).
    loopback = {
        field: value
        for field, value in settings.model_dump().items()
        if isinstance(value, str) and re.search(r"(127\.0\.0\.1|localhost|\[::1\])", value)
    }
    assert loopback == {}, f"{name} keeps local defaults in its container"
    postgres_url = getattr(settings, "postgres_url", None)
    if postgres_url is not None:
        assert urlsplit(postgres_url).path in ("", "/"), "POSTGRES_URL names the server only"
    if isinstance(settings, UserSettings):
        assert settings.admin_account_problem() is None


def test_the_compose_env_example_shows_the_compose_defaults(
    compose: dict[str, Any], environment_dir: Path
) -> None:
    text = "".join(
        (environment_dir / file).read_text() for file in ("docker-compose.yml", "compose.infra.yml")
    )
    defaults = {name: default for name, default in INTERPOLATION.findall(text)}
    example = env_file(environment_dir / ".env.example")
    project_name = example.pop("COMPOSE_PROJECT_NAME")
    # Without a .env compose names the project after this folder; the volumes (databases,
    # signing key) carry that name, so copying the example must not switch to new, empty ones.
    assert compose["name"] == project_name
    differing = {name: value for name, value in example.items() if defaults.get(name) != value}
    assert differing == {}


def root_env_example() -> dict[str, tuple[str, bool]]:
    """Variable -> (value, whether the line is a commented-out example)."""
    text = (ROOT / ".env.example").read_text()
    return {name: (value, bool(prefix)) for prefix, name, value in ASSIGNMENT.findall(text)}


def readable_anywhere() -> dict[str, list[Any]]:
    result: dict[str, list[Any]] = {}
    classes: list[type[BaseSettings]] = [*SETTINGS.values(), AmqpSettings, BootstrapSettings]
    for cls in classes:
        for name, default in variables(cls).items():
            result.setdefault(name, []).append(default)
    return result


def test_the_root_env_example_lists_every_variable_the_services_read() -> None:
    assert set(readable_anywhere()) - set(root_env_example()) == set()


def test_every_variable_in_the_root_env_example_is_read_with_the_default_shown() -> None:
    readable = readable_anywhere()
    example = root_env_example()
    assert set(example) - set(readable) == set(), "named in .env.example, read by nothing"
    wrong = {
        name: (value, readable[name])
        for name, (value, commented) in example.items()
        if not commented
        and name not in LOCAL_OVERRIDES
        and not all(shows_default(default, value) for default in readable[name])
    }
    assert wrong == {}


@pytest.mark.parametrize(
    "folder",
    [
        "service-user",
        "service-product",
        "service-cart",
        "service-order",
        "service-payment",
        "api-gateway",
        "web-storefront",
    ],
)
def test_every_setting_in_a_service_readme_is_read_by_it_with_that_default(folder: str) -> None:
    readable = {
        name: default
        for cls in README_SETTINGS.get(folder, (SETTINGS[folder],))
        for name, default in variables(cls).items()
    }
    text = (ROOT / folder / "README.md").read_text()
    rows = re.findall(r"^\|([^|\n]*`[A-Z][A-Z0-9_]*`[^|\n]*)\|([^|\n]*)\|", text, re.MULTILINE)
    assert rows, "no settings table"
    unknown, wrong = set(), {}
    for names_cell, default_cell in rows:
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", names_cell)
        shown = default_cell.strip()
        quoted = re.match(r"`([^`]*)`", shown)
        value = quoted[1] if quoted else shown.split(" ")[0]
        for name in names:
            if name not in readable:
                unknown.add(name)
            elif len(names) == 1 and value not in ("chassis", "") and not value.startswith("see"):
                if value == "(empty)":
                    value = ""
                if not shows_default(readable[name], value):
                    wrong[name] = (shown, readable[name])
    assert unknown == set(), f"{folder}/README.md names variables the service does not read"
    assert wrong == {}, f"{folder}/README.md shows other defaults than the code"
