"""What Fluent Bit does with a service's log line, read from fluent-bit.conf and parsers.conf
(no fluent-bit binary installs here, so `fluent-bit --dry-run` cannot run): the configuration is
parsed the way Fluent Bit reads it, and a json-file line holding a real chassis log line goes
through the inputs, filters and output it declares. A plugin or key this test does not model fails
it, so a change to the configuration is a change to this test too."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from chassis.logging import configure_logging, get_logger

Section = tuple[str, dict[str, str]]
Record = dict[str, Any]
CONTAINER_LOG = "/var/lib/docker/containers/0123abcd/0123abcd-json.log"
# What each modelled plugin may be configured with; anything else is not modelled.
MODELLED = {
    "SERVICE": None,  # any service key: it changes no record
    "INPUT tail": {"Name", "Tag", "Path", "Parser", "DB", "Mem_Buf_Limit", "Skip_Long_Lines",
                   "Refresh_Interval", "storage.type"},
    "FILTER grep": {"Name", "Match", "Regex"},
    "FILTER parser": {"Name", "Match", "Key_Name", "Parser", "Reserve_Data"},
    "FILTER nest": {"Name", "Match", "Operation", "Nested_under", "Add_prefix"},
    "OUTPUT es": {"Name", "Match", "Host", "Port", "Logstash_Format", "Logstash_Prefix", "Time_Key",
                  "Suppress_Type_Name", "Replace_Dots", "Trace_Error", "Retry_Limit"},
    "PARSER json": {"Name", "Format", "Time_Key", "Time_Format", "Time_Keep"},
}  # fmt: skip


def read_sections(path: Path) -> list[Section]:
    """`[SECTION]` headers followed by `Key value` lines, as Fluent Bit's classic format."""
    sections: list[Section] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if header := re.fullmatch(r"\[([A-Z]+)\]", line):
            sections.append((header[1], {}))
            continue
        assert sections, f"{path.name}:{number}: a key before any section"
        assert raw.startswith((" ", "\t")), f"{path.name}:{number}: keys are indented"
        key, _, value = line.partition(" ")
        assert value.strip(), f"{path.name}:{number}: {key} has no value"
        assert key not in sections[-1][1], f"{path.name}:{number}: {key} set twice"
        sections[-1][1][key] = value.strip()
    return sections


def kind(section: Section) -> str:
    name, keys = section
    if name == "SERVICE":
        return name
    return f"{name} {keys.get('Format' if name == 'PARSER' else 'Name')}"


def matches(pattern: str, tag: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), tag) is not None


def accessor(record: Record, expression: str) -> Any:
    """Fluent Bit's record accessor: `$key['nested']...`."""
    head = re.match(r"\$(\w+)", expression)
    assert head, expression
    value: Any = record.get(head[1])
    for key in re.findall(r"\['([^']+)'\]", expression):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def time_pattern(time_format: str) -> str:
    """A strptime format as a regex; `%L` is Fluent Bit's fractional seconds (any digits)."""
    parts = {"%Y": r"\d{4}", "%m": r"\d{2}", "%d": r"\d{2}", "%H": r"\d{2}", "%M": r"\d{2}",
             "%S": r"\d{2}", "%L": r"\d+"}  # fmt: skip
    return "".join(parts.get(token, re.escape(token)) for token in re.split(r"(%.)", time_format))


class Pipeline:
    def __init__(self, folder: Path) -> None:
        self.sections = read_sections(folder / "fluent-bit.conf")
        self.parsers = {keys["Name"]: keys for _, keys in read_sections(folder / "parsers.conf")}
        for section in self.sections + [("PARSER", p) for p in self.parsers.values()]:
            assert kind(section) in MODELLED, f"{kind(section)} is not modelled by this test"
            allowed = MODELLED[kind(section)]
            assert allowed is None or set(section[1]) <= allowed, f"{kind(section)}: new keys"

    def of(self, name: str) -> list[dict[str, str]]:
        return [keys for section, keys in self.sections if section == name]

    def parse(self, parser_name: str, text: str) -> Record | None:
        parser = self.parsers[parser_name]
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            return None
        if not isinstance(record, dict):
            return None
        if "Time_Key" in parser:
            stamp = str(record[parser["Time_Key"]])
            assert re.match(time_pattern(parser["Time_Format"]), stamp), stamp
            if parser.get("Time_Keep", "Off") == "Off":
                del record[parser["Time_Key"]]
        return record

    def run(self, line: str) -> tuple[str, Record] | None:
        """The index and document Elasticsearch gets for one line of a container's log file."""
        (tail,) = self.of("INPUT")
        assert matches(tail["Path"], CONTAINER_LOG), "the input does not tail the json-file logs"
        tag = tail["Tag"].replace("*", CONTAINER_LOG.replace("/", ".").lstrip("."))
        record = self.parse(tail["Parser"], line)
        assert record is not None, "the json-file line did not parse"
        for step in self.of("FILTER"):
            if not matches(step["Match"], tag):
                continue
            if step["Name"] == "grep":
                key, regex = step["Regex"].split(" ", 1)
                if not re.search(regex, str(accessor(record, key) or "")):
                    return None
            elif step["Name"] == "parser":
                parsed = self.parse(step["Parser"], record[step["Key_Name"]])
                if parsed is not None:
                    rest = {k: v for k, v in record.items() if k != step["Key_Name"]}
                    record = {**rest, **parsed} if step.get("Reserve_Data") == "On" else parsed
            elif step["Name"] == "nest":
                assert step["Operation"] == "lift", step
                nested = record.pop(step["Nested_under"], {})
                record |= {f"{step.get('Add_prefix', '')}{k}": v for k, v in nested.items()}
        (output,) = self.of("OUTPUT")
        assert matches(output["Match"], tag), "the output does not take the service lines"
        assert output["Logstash_Format"] == "On"
        index = f"{output['Logstash_Prefix']}-{datetime.now(UTC):%Y.%m.%d}"
        return index, record


@pytest.fixture(scope="module")
def pipeline(environment_dir: Path) -> Pipeline:
    return Pipeline(environment_dir / "fluent-bit")


@pytest.fixture
def service_line(capsys: pytest.CaptureFixture[str]) -> Iterator[str]:
    """One line a service writes to stdout, made by the chassis logging itself."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("service-user", "INFO")
    get_logger("user_service.handlers").warning("login_throttled", email_hash="ab12")
    yield capsys.readouterr().out.splitlines()[0]
    root.handlers, root.level = handlers, level
    structlog.reset_defaults()


def json_file_line(log: str, labels: dict[str, str]) -> str:
    """The line Docker's json-file driver writes, with the labels the compose file copies."""
    line = {"log": log + "\n", "stream": "stdout", "time": "2026-11-30T22:39:17.006662123Z"}
    return json.dumps({**line, "attrs": labels} if labels else line)


def test_a_service_line_reaches_the_ecommerce_logs_index_with_its_fields_on_top(
    pipeline: Pipeline, service_line: str
) -> None:
    result = pipeline.run(json_file_line(service_line, {"ecommerce_service": "service-user"}))
    assert result is not None, "the service's line was dropped"
    index, document = result
    assert index.startswith("ecommerce-logs-")
    assert document["service"] == "service-user"
    assert document["event"] == "login_throttled"
    assert document["level"] == "warning"
    assert document["email_hash"] == "ab12"
    assert document["container_ecommerce_service"] == "service-user"
    assert document["stream"] == "stdout"
    assert "log" not in document
    assert "attrs" not in document


def test_a_line_that_is_not_json_is_kept_under_log(pipeline: Pipeline) -> None:
    line = "Traceback (most recent call last):"
    result = pipeline.run(json_file_line(line, {"ecommerce_service": "service-cart"}))
    assert result is not None
    assert result[1]["log"] == line + "\n"
    assert result[1]["container_ecommerce_service"] == "service-cart"


def test_lines_of_unlabelled_containers_are_dropped(pipeline: Pipeline, service_line: str) -> None:
    assert pipeline.run(json_file_line(service_line, {})) is None
    assert pipeline.run(json_file_line(service_line, {"ecommerce_service": ""})) is None


def test_the_parsers_file_is_where_the_compose_file_mounts_it(
    pipeline: Pipeline, services: dict[str, dict[str, Any]]
) -> None:
    (service,) = pipeline.of("SERVICE")
    mounted = {
        mount.split(":")[1]: mount.split(":")[0] for mount in services["fluent-bit"]["volumes"]
    }
    folder, _, file_name = service["Parsers_File"].rpartition("/")
    assert mounted[folder] == "./fluent-bit"
    assert file_name == "parsers.conf"
    assert service["storage.path"].startswith(next(k for k, v in mounted.items() if "state" in v))
    assert services["fluent-bit"]["healthcheck"]["test"][-1].count(f":{service['HTTP_Port']}/")
