"""Logging: the only place that configures structlog.

JSON lines when stderr is not a terminal (what log shippers want), readable console output when
it is; one line per record, written atomically, for structlog's events and every library's
records alike (Celery's worker installs none of its own: see `worker/engine/celery_app.py`).
Context (run, conversation, analyzer, tenant) is bound once per run with contextvars.
Transcript text and secrets are never logged: log calls pass ids, counts and reasons only, and
the `redact` processor below drops any field named like a secret as a second line of defence.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

_REDACTED_NAMES = frozenset({"text", "transcript", "content", "turns", "messages", "authorization"})
_REDACTED_SUFFIXES = ("key", "token", "secret", "password")


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace values of fields whose names suggest secrets or transcript text."""
    for name in list(event):
        lowered = name.lower()
        if lowered in _REDACTED_NAMES or lowered.endswith(_REDACTED_SUFFIXES):
            event[name] = "[redacted]"
    return event


class AtomicLineHandler(logging.Handler):
    """Writes each formatted record as one line with a single `os.write` on the stream's file
    descriptor, under the handler's lock: lines from threads (Celery's consumer, pool threads,
    the service loop) never interleave, and no buffered writer can split one."""

    def __init__(self, stream: TextIO, *, single_line: bool = True) -> None:
        super().__init__()
        self.stream = stream
        self.single_line = single_line

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if self.single_line:  # a JSON renderer never emits one; a stray message might
                line = line.replace("\n", "\\n")
            line += "\n"
            self._write(line)
        except Exception:  # logging must never raise; the stdlib reports it on stderr
            self.handleError(record)

    def _write(self, line: str) -> None:
        try:
            fd = self.stream.fileno()
        except (AttributeError, ValueError, io.UnsupportedOperation):
            # An in-memory stream (a test's capture): one write call is all there is.
            self.stream.write(line)
            self.stream.flush()
            return
        self.stream.flush()  # anything already buffered goes first, whole
        data = line.encode("utf-8", errors="backslashreplace")
        while data:
            written = os.write(fd, data)
            data = data[written:]


class _DropTaskSucceeded(logging.Filter):
    """Drops Celery's "Task posthoc.run_analysis[<celery id>] succeeded in 3.1s: None", one line
    per task that names only Celery's own id: posthoc's `run.finished` and `delivery.*` lines
    carry the run id, status and timing. At hundreds of runs a second these lines cost a few
    percent of a worker's CPU. Celery's "received" lines stay (they show redeliveries), and so
    do its retry, failure and error lines."""

    _success: str | None = None  # Celery's format, imported at the first record: only Celery
    # processes log through this logger, and importing it would slow every other command's start

    def filter(self, record: logging.LogRecord) -> bool:
        if self._success is None:
            from celery.app.trace import LOG_SUCCESS  # noqa: PLC0415

            self._success = LOG_SUCCESS
        return record.msg is not self._success


def configure_logging(level: str = "info", log_format: str = "auto") -> None:
    """Configure structlog and the standard library's logging to write to stderr.

    Everything goes through one stdlib handler: structlog's events and every library's records
    (Celery, kombu, alembic, warnings) are rendered by structlog's `ProcessorFormatter`, so with
    JSON asked for every line is one JSON object.
    """
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = AtomicLineHandler(sys.stderr, single_line=as_json)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # structlog filters its own events by level; library records below WARNING are noise
    # (one line per HTTP request, per migration step) unless debugging.
    root.setLevel(numeric_level)
    for library in ("alembic", "kombu", "amqp", "urllib3"):
        logging.getLogger(library).setLevel(max(numeric_level, logging.WARNING))
    logging.captureWarnings(True)
    # One plain-text line per HTTP request from the clients' own loggers would drown the JSON
    # summary lines; their warnings still come through.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "anthropic", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(numeric_level, logging.WARNING))
    trace = logging.getLogger("celery.app.trace")
    for old_filter in [f for f in trace.filters if isinstance(f, _DropTaskSucceeded)]:
        trace.removeFilter(old_filter)
    if numeric_level > logging.DEBUG:
        trace.addFilter(_DropTaskSucceeded())


def say_from_signal_handler(message: str, logger: str, level: str = "warning") -> None:
    """Write one record without taking any logging lock (a signal handler may interrupt a thread
    that holds one): Celery's shutdown notices, which it would otherwise `print` as plain text.
    A single `os.write` of a whole line, rendered like the configured handler renders."""
    handler = next(
        (h for h in logging.getLogger().handlers if isinstance(h, AtomicLineHandler)), None
    )
    text = message.strip()
    if handler is None:  # logging not configured by posthoc: Celery's own behaviour
        print(text, file=sys.__stderr__, flush=True)
        return
    if handler.single_line:
        timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = json.dumps({"event": text, "level": level, "logger": logger, "timestamp": timestamp})
    else:
        line = text
    try:
        os.write(handler.stream.fileno(), (line + "\n").encode("utf-8", "backslashreplace"))
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        handler.stream.write(line + "\n")
