"""OpenTelemetry tracing (`POSTHOC_TRACING`): off, nothing happens; on, one trace follows a
conversation from the intake's request through the run (a span per attempt, a child per model
turn and per tool call) to its deliveries, carried between processes in message headers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from analyzers.testing import ScriptedModel
from tests.worker.test_engine import make_engine, queue_run, recording_turns
from worker.catalog import Catalog
from worker.engine.celery_app import DELIVER_TASK, create_celery, enqueue_deliveries_with
from worker.engine.celery_app import enqueue_with as enqueue_runs_with
from worker.engine.metered_model import MeteredModel
from worker.ledger import Ledger
from worker.observability import tracing
from worker.settings import Settings


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    found = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    found.migrate()
    try:
        yield found
    finally:
        found.dispose()


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure("otlp", "posthoc-test", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def test_tracing_off_is_a_no_op() -> None:
    tracing.configure("off", "posthoc-test")
    assert not tracing.enabled()
    assert tracing.headers() == {}
    with tracing.span("posthoc.run", run_id="r") as span:
        assert span is None
    tracing.record_tool_calls([])


def test_one_trace_from_intake_through_the_run_to_its_delivery(
    spans: InMemorySpanExporter, ledger: Ledger, catalog: Catalog
) -> None:
    run_id = queue_run(ledger)
    with tracing.span("posthoc.intake", trigger="webhook"):
        message_headers = tracing.headers()
    assert set(message_headers) == {"traceparent"}

    engine = make_engine(ledger, catalog, MeteredModel(ScriptedModel(recording_turns())))
    carried = tracing.carrier_of(SimpleNamespace(headers=message_headers))
    outcome = asyncio.run(engine.process(run_id, trace=carried))
    assert outcome.status == "succeeded"
    with tracing.span("posthoc.delivery", parent=outcome.trace, delivery_id="d1"):
        pass

    finished = {span.name: span for span in spans.get_finished_spans()}
    intake, run, delivery = (
        finished["posthoc.intake"],
        finished["posthoc.run"],
        finished["posthoc.delivery"],
    )
    turns = [s for s in spans.get_finished_spans() if s.name == "posthoc.model_turn"]
    tools = [s for s in spans.get_finished_spans() if s.name.startswith("tool ")]
    assert len(turns) == 2
    assert [s.name for s in tools] == ["tool record_follow_up"]
    assert {s.context.trace_id for s in spans.get_finished_spans()} == {intake.context.trace_id}
    assert run.parent is not None
    assert run.parent.span_id == intake.context.span_id
    for child in [*turns, *tools]:
        assert child.parent is not None
        assert child.parent.span_id == run.context.span_id
    assert delivery.parent is not None
    assert delivery.parent.span_id == run.context.span_id
    attributes: Any = run.attributes
    assert attributes["analyzer"] == "follow_ups"
    assert attributes["status"] == "succeeded"
    assert turns[0].attributes is not None
    assert turns[0].attributes["model"] == "claude-sonnet-5-5"
    [tool] = tools
    assert tool.start_time is not None
    assert run.start_time is not None
    assert tool.end_time is not None
    assert run.end_time is not None
    assert run.start_time <= tool.start_time <= tool.end_time <= run.end_time
    # Span attributes carry ids and counts, never the transcript.
    everything = str([dict(s.attributes or {}) for s in spans.get_finished_spans()])
    assert "periwinkle" not in everything


def test_messages_carry_the_trace_to_the_next_process(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_celery(Settings(broker_url="memory://"))
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(app, "send_task", lambda name, **kw: sent.append((name, kw)))
    with tracing.span("posthoc.intake"):
        enqueue_runs_with(app)(["run-1"])
        expected = tracing.headers()
    enqueue_deliveries_with(app, trace=expected)(["delivery-1"])
    [(_, run_message), (task, delivery_message)] = sent
    assert run_message["headers"] == expected
    assert (task, delivery_message["headers"]) == (DELIVER_TASK, expected)
    app.close()


def test_a_request_without_trace_headers_starts_a_new_trace(spans: InMemorySpanExporter) -> None:
    assert tracing.carrier_of(SimpleNamespace(headers=None)) == {}
    assert tracing.carrier_of(SimpleNamespace(headers={"traceparent": 7})) == {}
    with tracing.span("posthoc.run", parent={}):
        pass
    [span] = spans.get_finished_spans()
    assert span.parent is None


@settings(max_examples=30, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.text(max_size=300)))
def test_any_traceparent_a_message_carries_is_continued_or_ignored(value: object) -> None:
    """Headers come from the broker, so from anyone who can publish: never a traceback."""
    exporter = InMemorySpanExporter()
    tracing.configure("otlp", "posthoc-fuzz", exporter=exporter)
    try:
        carried = tracing.carrier_of(SimpleNamespace(headers={"traceparent": value}))
        with tracing.span("posthoc.run", parent=carried):
            pass
        assert len(exporter.get_finished_spans()) == 1
    finally:
        tracing.shutdown()
