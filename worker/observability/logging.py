"""Logging: the only place that configures structlog.

JSON lines when stdout is not a terminal (what log shippers want), readable console output when
it is. Context (run, conversation, analyzer, tenant) is bound once per run with contextvars.
Transcript text and secrets are never logged: log calls pass ids, counts and reasons only, and
the `redact` processor below drops any field named like a secret as a second line of defence.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

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


def configure_logging(level: str = "info", log_format: str = "auto") -> None:
    """Configure structlog and the standard library's logging to write to stderr."""
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stderr)
    # One plain-text line per HTTP request from the clients' own loggers would drown the JSON
    # summary lines; their warnings still come through.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "anthropic"):
        logging.getLogger(noisy).setLevel(max(numeric_level, logging.WARNING))
