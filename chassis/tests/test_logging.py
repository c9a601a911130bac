"""Logging configuration: structlog and stdlib loggers both write one JSON object per line, or, with
LOG_FORMAT=console, one readable line per event carrying the same fields."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from chassis.logging import (
    REDACTED,
    configure_logging,
    get_logger,
    uses_console,
    write_access_line,
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level
    structlog.reset_defaults()


def test_structlog_and_library_lines_are_json_with_the_service_and_an_event_name(
    restore_logging, capsys
) -> None:
    configure_logging("service-test", "INFO")
    get_logger("orders").info("order_created", order_id="o-1", token="abc")
    logging.getLogger("uvicorn.error").warning("listening on %s", "0.0.0.0:8080")
    logging.getLogger("uvicorn.error").debug("below the level")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["logger"], line["event"], line["level"]) for line in lines] == [
        ("orders", "order_created", "info"),
        ("uvicorn.error", "library_log", "warning"),
    ]
    assert lines[1]["message"] == "listening on 0.0.0.0:8080"
    assert all(line["service"] == "service-test" for line in lines)
    assert all(line["timestamp"].endswith("Z") for line in lines)
    assert lines[0]["order_id"] == "o-1"
    assert lines[0]["token"] == REDACTED


def log_an_event_and_an_access_line() -> None:
    # Not hex: a trace or span id on the same line can never contain it by chance.
    get_logger("orders").info("order_created", order_id="o-1", token="secret-token-xyz")
    write_access_line(logging.getLogger("chassis.rpc"), "rpc", {"code": "OK"})


# <timestamp> [<level>   ] <service> <event> ... (then key=value pairs)
CONSOLE_LINE = re.compile(
    r"^(?P<timestamp>\S+Z) \[(?P<level>\w+) *\] (?P<service>\S+) +(?P<event>\S+) "
)


def test_console_lines_show_service_level_and_event_with_the_same_ids_as_json_lines(
    restore_logging, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same events of one request (a span, a request id bound, as the gateway and the gRPC
    server do), rendered both ways."""
    monkeypatch.setenv("NO_COLOR", "1")
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    with (
        trace.get_tracer("test").start_as_current_span("request"),
        structlog.contextvars.bound_contextvars(request_id="req-42"),
    ):
        configure_logging("service-test", "INFO", "json")
        log_an_event_and_an_access_line()
        as_json = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        configure_logging("service-test", "INFO", "console")
        log_an_event_and_an_access_line()
        console = capsys.readouterr().out.splitlines()

    assert len(console) == len(as_json) == 2  # one line per event, the access line included
    for line, fields in zip(console, as_json, strict=True):
        shown = CONSOLE_LINE.match(line)
        assert shown, line
        assert shown["level"] == fields["level"] == "info"
        assert shown["service"] == fields["service"] == "service-test"
        assert shown["event"] == fields["event"]
        assert f"request_id={fields['request_id']}" in line
        assert f"trace_id={fields['trace_id']}" in line
        assert f"span_id={fields['span_id']}" in line
    assert "token=[REDACTED]" in console[0]
    assert "secret-token-xyz" not in console[0]
    assert "\x1b[" not in "".join(console)  # NO_COLOR


def test_console_lines_are_coloured_unless_no_color_is_set(
    restore_logging, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    configure_logging("service-test", "INFO", "console")
    get_logger("orders").warning("stock_low", product_id="p-1")
    assert "\x1b[" in capsys.readouterr().out


class Stream:
    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def test_auto_means_console_on_a_terminal_and_json_when_piped() -> None:
    assert uses_console("auto", Stream(terminal=True))
    assert not uses_console("auto", Stream(terminal=False))
    assert uses_console("console", Stream(terminal=False))
    assert not uses_console("json", Stream(terminal=True))


class CountingStdout(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_access_lines_leave_in_one_write_a_moment_later_and_in_order(
    restore_logging, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = CountingStdout()
    monkeypatch.setattr(sys, "stdout", out)
    configure_logging("service-test", "INFO")
    access = logging.getLogger("chassis.rpc")

    write_access_line(access, "rpc", {"n": 1})
    write_access_line(access, "rpc", {"n": 2})
    assert out.getvalue() == ""  # held for a moment
    await asyncio.sleep(0.05)
    assert [json.loads(line)["n"] for line in out.getvalue().splitlines()] == [1, 2]
    assert out.writes == 1

    # Another line written meanwhile goes out after the access lines held before it.
    write_access_line(access, "rpc", {"n": 3})
    get_logger("orders").info("order_created")
    write_access_line(access, "rpc", {"n": 4})
    await asyncio.sleep(0.05)
    events = [json.loads(line) for line in out.getvalue().splitlines()[2:]]
    assert [line.get("n", line["event"]) for line in events] == [3, "order_created", 4]


def test_access_lines_outside_a_loop_are_written_at_once(
    restore_logging, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = CountingStdout()
    monkeypatch.setattr(sys, "stdout", out)
    configure_logging("service-test", "INFO")
    write_access_line(logging.getLogger("chassis.rpc"), "rpc", {"n": 1})
    assert json.loads(out.getvalue())["n"] == 1
