"""OpenTelemetry tracing, off by default (`POSTHOC_TRACING=otlp|console`, the `otel` extra).

One trace follows a conversation's run across processes: `posthoc serve` opens a span for the
request that recorded it and puts the W3C `traceparent` in the headers of the run's broker
message; the worker continues that trace with a span per run attempt, a child per model turn
(timed live, in `MeteredModel`) and per tool call (from the run's trace, with their recorded
times), and passes the context on to the delivery tasks the run wakes, whose spans join it too.

Spans carry ids and counts (run, analyzer, attempt, tokens), never transcript text or secrets.
While tracing is off nothing here imports OpenTelemetry, so the core install stays light and
every call is a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from schemas.result import ToolCallRecord

TRACEPARENT = "traceparent"
_tracer: Any = None
_provider: Any = None


class TracingUnavailable(Exception):
    """Tracing was asked for but the `otel` extra is not installed."""


def enabled() -> bool:
    return _tracer is not None


def configure(mode: str, service: str, *, exporter: Any = None) -> None:
    """Start tracing for this process (`mode` from `Settings.tracing`); `exporter` replaces the
    one `mode` names (tests pass an in-memory one). A no-op for `off`."""
    global _tracer, _provider  # noqa: PLW0603 - one tracer per process, set at start-up
    if mode == "off" and exporter is None:
        return
    try:
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError as error:
        raise TracingUnavailable(
            "POSTHOC_TRACING: OpenTelemetry is not installed; pip install 'posthoc[otel]'"
        ) from error
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif mode == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415 - the `otel` extra
                OTLPSpanExporter,
            )
        except ImportError as error:
            raise TracingUnavailable(
                "POSTHOC_TRACING=otlp: the OTLP exporter is not installed; "
                "pip install 'posthoc[otel]'"
            ) from error
        # Endpoint, headers and timeouts come from the standard OTEL_EXPORTER_OTLP_* variables.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _provider = provider
    _tracer = provider.get_tracer("posthoc")


def shutdown() -> None:
    """Flush and stop (process exit, or a test's teardown)."""
    global _tracer, _provider  # noqa: PLW0603 - see configure
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def headers() -> dict[str, str]:
    """The current trace context as message headers (empty when tracing is off)."""
    if _tracer is None:
        return {}
    from opentelemetry.propagate import inject  # noqa: PLC0415

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


def carrier_of(request: Any) -> dict[str, str]:
    """The trace headers a Celery task request carries (custom message headers)."""
    found = getattr(request, "headers", None) or {}
    value = found.get(TRACEPARENT) if isinstance(found, Mapping) else None
    value = value or getattr(request, TRACEPARENT, None)
    return {TRACEPARENT: value} if isinstance(value, str) else {}


@contextlib.contextmanager
def span(name: str, *, parent: Mapping[str, str] | None = None, **attributes: Any) -> Iterator[Any]:
    """A span around the block, current inside it (children join it); `parent`: headers that
    carry the trace to continue. Yields the span, or None while tracing is off."""
    if _tracer is None:
        yield None
        return
    context = None
    if parent:
        from opentelemetry.propagate import extract  # noqa: PLC0415

        context = extract(dict(parent))
    clean = {k: v for k, v in attributes.items() if v is not None}
    with _tracer.start_as_current_span(name, context=context, attributes=clean) as current:
        yield current


def set_attributes(current: Any, **attributes: Any) -> None:
    if current is not None:
        current.set_attributes({k: v for k, v in attributes.items() if v is not None})


def record_tool_calls(calls: Sequence[ToolCallRecord]) -> None:
    """A finished child span per tool call of the run, at the times the run recorded."""
    if _tracer is None:
        return
    from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

    for call in calls:
        if call.started_at is None:
            continue
        start = int(call.started_at.timestamp() * 1e9)
        end = int((call.started_at + timedelta(milliseconds=call.duration_ms)).timestamp() * 1e9)
        child = _tracer.start_span(
            f"tool {call.tool_name}",
            start_time=start,
            attributes={
                "posthoc.tool.name": call.tool_name,
                "posthoc.tool.kind": call.kind,
                "posthoc.tool.succeeded": call.succeeded,
                **({"posthoc.procedure": call.procedure_name} if call.procedure_name else {}),
            },
        )
        if not call.succeeded:
            child.set_status(Status(StatusCode.ERROR))
        child.end(end_time=end)
