"""Structured logging: one line per event with service, level, trace ids, and secrets redacted;
stdlib loggers (grpc, uvicorn, aio-pika, alembic) go through the same renderer.

Lines are JSON by default (containers, tests, log shippers). `LOG_FORMAT=console` renders the
same events for a person: one aligned line each, coloured (unless `NO_COLOR` is set), with the
service's name after the level and every other field (trace and request ids included) as
`key=value`; `LOG_FORMAT=auto` picks console when stdout is a terminal and JSON otherwise.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"password|passwd|token|authorization|secret|private_key|privatekey|jwt|api_key|cookie",
    re.IGNORECASE,
)
# 13 to 19 digits, optionally grouped by spaces or dashes, standing alone (not inside a hex id):
# the shape of a payment card number.
_CARD_NUMBER = re.compile(r"(?<![0-9A-Za-z])(?:\d[ -]?){12,18}\d(?![0-9A-Za-z])")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _mask_cards(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        return REDACTED if _luhn_valid(digits) else match.group(0)

    return _CARD_NUMBER.sub(replace, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            key: REDACTED if _SECRET_KEY.search(str(key)) else _redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(item) for item in value)
    if isinstance(value, str):
        return _mask_cards(value)
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Replace the value of any secret-looking key (at any depth) and card-like numbers."""
    return cast(EventDict, _redact_value(event_dict))


def add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Attach the current OpenTelemetry span, so a log line leads to its trace."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


LIBRARY_EVENT = "library_log"


def name_library_records(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """A line from a library's stdlib logger (uvicorn, alembic, grpc, aio-pika): its text moves
    to `message` and its event is `library_log`, so every `event` of every line is a name."""
    event_dict["message"] = event_dict.get("event")
    event_dict["event"] = LIBRARY_EVENT
    return event_dict


def _add_service(service: str) -> Processor:
    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


_service_name = "service"
# The console renderer when LOG_FORMAT chose it; None renders JSON.
_console: structlog.dev.ConsoleRenderer | None = None


def _console_renderer(*, colors: bool) -> structlog.dev.ConsoleRenderer:
    """structlog's console renderer with the service's name in a column of its own after the
    level (several services share one terminal under `make dev`)."""
    renderer = structlog.dev.ConsoleRenderer(
        colors=colors,
        pad_event_to=28,
        # A plain traceback: the default (rich's, when installed) prints every frame's locals,
        # which may hold a password or a token.
        exception_formatter=structlog.dev.plain_traceback,
    )
    columns = renderer.columns
    logger_column = next(column for column in columns if column.key == "logger")
    service = structlog.dev.Column(
        "service",
        dataclasses.replace(
            cast(structlog.dev.KeyValueColumnFormatter, logger_column.formatter),
            prefix="",
            postfix="",
            width=15,
        ),
    )
    level_at = next(index for index, column in enumerate(columns) if column.key == "level")
    renderer.columns = [*columns[: level_at + 1], service, *columns[level_at + 1 :]]
    return renderer


def uses_console(log_format: str, stream: Any = None) -> bool:
    """Whether `log_format` (json, console or auto) means console lines on `stream` (stdout)."""
    if log_format == "auto":
        isatty = getattr(stream or sys.stdout, "isatty", None)
        return bool(isatty and isatty())
    return log_format == "console"


def write_access_line(logger: logging.Logger, event: str, fields: dict[str, Any]) -> None:
    """One access-log line (per RPC, per HTTP request) in the shape of every other line, written
    straight to stdout: the structlog/stdlib pipeline cost a fifth of a short RPC's CPU. Only for
    fields that cannot hold a secret (methods, route templates, codes, timings), since it skips
    the redaction pass."""
    if not logger.isEnabledFor(logging.INFO):
        return
    line = {
        **structlog.contextvars.get_contextvars(),
        **fields,
        "event": event,
        "logger": logger.name,
        "level": "info",
        "service": _service_name,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        line["trace_id"] = format(context.trace_id, "032x")
        line["span_id"] = format(context.span_id, "016x")
    if _console is not None:
        rendered = str(_console(None, "info", line))
    else:
        rendered = orjson.dumps(line, default=str).decode()
    _access_lines.write(rendered)


class _AccessLines:
    """Access lines leave in batches: the first line held starts a `DELAY` timer on the running
    event loop, and the lines held by then leave in one write. A write and a flush per line were
    a tenth of a cached gateway read and 5% of a short RPC. Lines stay in order with every other
    line (any other line writes the held ones first), a clean exit writes them, and outside a
    running loop, or past `MAX_PENDING` held lines, they are written at once. A process killed
    outright loses at most `DELAY` of access lines."""

    DELAY = 0.01
    MAX_PENDING = 256

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def write(self, rendered: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._pending.append(rendered)
            if loop is None or len(self._pending) >= self.MAX_PENDING:
                loop = None
            elif self._scheduled_on is not loop:
                self._scheduled_on = loop
                loop.call_later(self.DELAY, self.flush)
        if loop is None:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._pending, self._scheduled_on = self._pending, [], None
            if lines:
                sys.stdout.write("\n".join(lines) + "\n")
                sys.stdout.flush()


_access_lines = _AccessLines()
atexit.register(_access_lines.flush)


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stdout, after the access lines written before this line."""

    def emit(self, record: logging.LogRecord) -> None:
        _access_lines.flush()
        super().emit(record)


def configure_logging(service: str, level: str = "INFO", log_format: str = "json") -> None:
    """Route structlog and stdlib logging to stdout, one line per event: JSON, or console lines
    (see the module docstring for `log_format`). Safe to call again."""
    global _service_name, _console
    _service_name = service
    _console = (
        _console_renderer(colors="NO_COLOR" not in os.environ) if uses_console(log_format) else None
    )
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        _add_service(service),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    rendering: list[Processor] = (
        # The console renderer lays out a traceback itself.
        [redact_secrets, _console]
        if _console is not None
        else [
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(default=str),
        ]
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, name_library_records],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    )
    handler = _StdoutHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric_level)
    # Libraries that chat at INFO about every connection would drown the service's own events.
    for noisy in ("aiormq", "aio_pika", "asyncio", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(max(numeric_level, logging.WARNING))


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
