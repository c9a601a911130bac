"""Logging configuration: structlog and stdlib loggers both write one JSON object per line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from chassis.logging import REDACTED, configure_logging, get_logger


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
