"""docs/metrics.md read as data, the metrics a process exports read from its scrape, and the metric
names the provisioned dashboards and alert rules query."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "docs/metrics.md"
ENVIRONMENT = ROOT / "docker-compose-environment"
PROCESSES = (
    "api-gateway",
    "service-user",
    "service-product",
    "service-cart",
    "service-order",
    "service-payment",
)
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
_ROW = re.compile(r"^\| `([a-z_:*]+)` \|(.*)\|\s*$", re.MULTILINE)
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "irate",
    "histogram_quantile", "or", "and", "unless", "vector", "on", "ignoring", "label_values",
}  # fmt: skip


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    labels: frozenset[str] | None  # None: exported without a series, so its labels are unseen


@dataclass(frozen=True)
class Catalogue:
    exported: dict[str, dict[str, Metric]]  # process -> name -> metric
    external: tuple[str, ...]  # names (or `prefix_*`) of other exporters

    def knows(self, name: str) -> bool:
        names = {metric for metrics in self.exported.values() for metric in metrics}
        return name in names or any(
            name.startswith(pattern.removesuffix("*")) if pattern.endswith("*") else name == pattern
            for pattern in self.external
        )


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.split("|")]


def read_catalogue(path: Path = CATALOGUE) -> Catalogue:
    exported: dict[str, dict[str, Metric]] = {name: {} for name in PROCESSES}
    external: list[str] = []
    for name, rest in _ROW.findall(path.read_text()):
        cells = _cells(rest)
        if len(cells) == 2:  # | metric | exported by | meaning |: another exporter's
            external.append(name)
            continue
        kind, labels, processes = cells[0], cells[1], cells[2]
        label_set = frozenset(re.findall(r"`([a-z_]+)`", labels))
        owners = PROCESSES if processes == "every process" else processes.split(", ")
        for process in owners:
            assert process in exported, f"{name}: unknown process {process!r} in the catalogue"
            exported[process][name] = Metric(name, kind, label_set)
    return Catalogue(exported, tuple(external))


def read_scrape(text: str) -> dict[str, Metric]:
    """name -> metric of one `/metrics` page, by the names the catalogue uses (`_total`)."""
    families = list(text_string_to_metric_families(text))
    kinds = {family.name: family.type for family in families}
    found: dict[str, Metric] = {}
    for family in families:
        base = family.name.removesuffix("_created")
        if family.type == "gauge" and base != family.name and kinds.get(base) != "gauge":
            continue  # the `_created` timestamp of a counter or histogram
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = (
            frozenset(key for sample in family.samples for key in sample.labels) - {"le"}
            if family.samples
            else None
        )
        found[name] = Metric(name, family.type, labels)
    return found


def label_values(text: str) -> set[str]:
    return {
        value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for value in sample.labels.values()
    }


def metric_names(expression: str) -> set[str]:
    """Names of the metrics a PromQL expression (or Grafana's `label_values(...)`) reads."""
    without_strings = re.sub(r'"(?:\\.|[^"\\])*"', '""', expression)
    without_groupings = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_groupings)
    without_matchers = re.sub(r"\{[^}]*\}", "", without_ranges)
    without_label_arguments = re.sub(r",\s*[a-z_]+\s*\)", ")", without_matchers)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_label_arguments))
    return words - PROMQL_WORDS


def queried_series() -> dict[str, set[str]]:
    """Where each metric name is queried -> the names: every dashboard panel and template
    variable, and every alert rule."""
    found: dict[str, set[str]] = {}
    for path in sorted((ENVIRONMENT / "grafana/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if "expr" in target:
                    found[f"{path.name}: {panel['title']}"] = metric_names(target["expr"])
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                found[f"{path.name}: ${variable['name']}"] = metric_names(variable["definition"])
    groups = yaml.safe_load((ENVIRONMENT / "prometheus/alerts.yml").read_text())["groups"]
    for group in groups:
        for rule in group["rules"]:
            found[f"alerts.yml: {rule['alert']}"] = metric_names(rule["expr"])
    return found


def base_name(series: str, catalogue: Catalogue) -> str:
    """The catalogued name a queried series belongs to (`x_bucket` -> histogram `x`)."""
    for suffix in HISTOGRAM_SERIES:
        stem = series.removesuffix(suffix)
        if stem != series and catalogue.knows(stem):
            return stem
    return series
