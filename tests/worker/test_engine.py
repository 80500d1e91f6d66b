"""The worker engine on a real SQLite ledger with a scripted model: claim, run, and every way an
attempt ends (success, no-op, retry, exhausted, lost lease, config error, crash), the backoff,
and the one log line per attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from analyzers.errors import TransientModelError
from analyzers.model.protocol import ModelRequest, ModelTurn
from analyzers.testing import Script, ScriptedModel, reply, text, tool_call
from schemas import AnalysisResult, Conversation
from worker.catalog import Catalog
from worker.engine.runner import Engine, EngineConfig, ProcessOutcome
from worker.ledger import ATTEMPTS_EXHAUSTED, Ledger, ManualClock, RunPlan

SECRET_PHRASE = "periwinkle walrus invoice 7734"
"""Transcript text that must never reach a log line."""

FOLLOW_UP = {
    "priority": "high",
    "reason": "The customer was charged twice and wants the second charge refunded.",
    "suggested_action": "Refund the duplicate charge and email the customer today.",
}
LEASE_SECONDS = 30.0


def conversation(conversation_id: str = "c-engine") -> Conversation:
    return Conversation.model_validate(
        {
            "conversation_id": conversation_id,
            "tenant_id": "acme",
            "agent_id": "support-bot",
            "channel": "chat",
            "started_at": "2026-11-20T09:00:00Z",
            "ended_at": "2026-11-20T09:05:00Z",
            "outcome": "resolved",
            "turns": [
                {"role": "user", "text": f"I was billed twice, reference {SECRET_PHRASE}."},
                {"role": "agent", "text": "I see both charges; I will ask billing to refund one."},
                {"role": "user", "text": "Thanks, please hurry."},
            ],
        }
    )


def recording_turns() -> list[Script]:
    """A run of follow_ups that records one follow-up and ends."""
    return [
        reply(tool_call("record_follow_up", {"value": FOLLOW_UP, "evidence_turns": [0, 1]})),
        reply(text("Recorded one follow-up.")),
    ]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture(autouse=True)
def _default_structlog() -> Iterator[None]:
    """Other tests (the CLI's) configure structlog with a level filter; start from defaults."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def queue_run(
    ledger: Ledger, analyzer: str = "follow_ups", max_attempts: int = 3, conversation_id: str = ""
) -> str:
    ref = ledger.save_conversation(conversation(conversation_id or "c-engine"))
    [run] = ledger.record_runs(
        ref.pk, [RunPlan(analyzer, "1.0.0", max_attempts=max_attempts)], trigger="webhook"
    )
    return run.id


def make_engine(
    ledger: Ledger,
    catalog: Catalog,
    model: Any,
    *,
    heartbeat_seconds: float = 60.0,
    jitter: float = 0.0,
    retry_base_seconds: float = 10.0,
    retry_max_seconds: float = 900.0,
) -> Engine:
    return Engine(
        ledger=ledger,
        catalog=catalog,
        model=model,
        config=EngineConfig(
            worker_id="host:1",
            default_model="claude-sonnet-5-5",
            lease_seconds=LEASE_SECONDS,
            heartbeat_seconds=heartbeat_seconds,
            retry_base_seconds=retry_base_seconds,
            retry_max_seconds=retry_max_seconds,
        ),
        jitter=lambda: jitter,
    )


def process(engine: Engine, run_id: str) -> ProcessOutcome:
    return asyncio.run(engine.process(run_id))


def outcomes(ledger: Ledger, run_id: str) -> list[str | None]:
    return [attempt.outcome for attempt in ledger.attempts(run_id)]


def test_a_queued_run_succeeds_and_its_result_is_stored(ledger: Ledger, catalog: Catalog) -> None:
    run_id = queue_run(ledger)
    model = ScriptedModel(recording_turns())

    outcome = process(make_engine(ledger, catalog, model), run_id)

    assert outcome == ProcessOutcome("succeeded")
    run = ledger.get_run(run_id)
    assert (run.status, run.attempts, run.lease_owner) == ("succeeded", 1, None)
    [result] = ledger.results([run_id])
    assert isinstance(result, AnalysisResult)
    assert (result.run_id, result.analyzer, result.conversation_id) == (
        run_id,
        "follow_ups",
        "c-engine",
    )
    assert [output.value for output in result.outputs["follow_up"]] == [FOLLOW_UP]
    assert outcomes(ledger, run_id) == ["succeeded"]
    assert model.exhausted


def test_processing_a_finished_run_again_is_a_noop(ledger: Ledger, catalog: Catalog) -> None:
    """A redelivered message: no claim, no model call, no new attempt, the result untouched."""
    run_id = queue_run(ledger)
    model = ScriptedModel(recording_turns())
    engine = make_engine(ledger, catalog, model)
    process(engine, run_id)
    stored = ledger.results([run_id])

    assert process(engine, run_id) == ProcessOutcome("noop")

    assert len(model.requests) == 2
    assert outcomes(ledger, run_id) == ["succeeded"]
    assert ledger.results([run_id]) == stored


def test_a_run_leased_by_another_worker_is_a_noop(ledger: Ledger, catalog: Catalog) -> None:
    run_id = queue_run(ledger)
    assert ledger.claim(run_id, "other-host:9:x", LEASE_SECONDS) is not None
    model = ScriptedModel([])

    assert process(make_engine(ledger, catalog, model), run_id) == ProcessOutcome("noop")

    assert model.requests == []
    assert ledger.get_run(run_id).lease_owner == "other-host:9:x"


def test_a_transient_model_error_queues_the_run_again_after_the_backoff(
    ledger: Ledger, catalog: Catalog, clock: ManualClock
) -> None:
    run_id = queue_run(ledger)
    overloaded = TransientModelError("overloaded (529)", retry_after=42.0)
    model = ScriptedModel([overloaded, *recording_turns()])
    engine = make_engine(ledger, catalog, model, jitter=0.0)  # jittered backoff alone: 5 s

    outcome = process(engine, run_id)

    assert outcome.status == "retry"
    assert outcome.retry_in is not None
    assert outcome.retry_in >= 42.0
    run = ledger.get_run(run_id)
    assert run.status == "queued"
    assert run.lease_owner is None
    assert run.available_at == clock() + timedelta(seconds=outcome.retry_in)
    assert run.available_at > clock()
    assert (run.error_type, run.error_message) == ("transient_model_error", "overloaded (529)")
    [attempt] = ledger.attempts(run_id)
    assert (attempt.outcome, attempt.error_type) == ("retry", "transient_model_error")

    # Not due yet: a message arriving early is a no-op; once due, the run goes again.
    assert process(engine, run_id) == ProcessOutcome("noop")
    clock.advance(outcome.retry_in)
    assert process(engine, run_id) == ProcessOutcome("succeeded")
    assert outcomes(ledger, run_id) == ["retry", "succeeded"]


def test_a_transient_error_on_the_last_attempt_fails_the_run_attempts_exhausted(
    ledger: Ledger, catalog: Catalog, clock: ManualClock
) -> None:
    run_id = queue_run(ledger, max_attempts=2)
    model = ScriptedModel([TransientModelError("timeout"), TransientModelError("timeout again")])
    engine = make_engine(ledger, catalog, model)

    first = process(engine, run_id)
    assert first.status == "retry"
    clock.advance(first.retry_in or 0.0)
    assert process(engine, run_id) == ProcessOutcome("failed")

    run = ledger.get_run(run_id)
    assert (run.status, run.error_type, run.attempts) == ("failed", ATTEMPTS_EXHAUSTED, 2)
    assert run.error_message is not None
    assert "timeout again" in run.error_message
    assert outcomes(ledger, run_id) == ["retry", "failed"]
    assert ledger.results([run_id]) == []


class GatedModel:
    """The scripted model behind a gate: every call waits until the test opens it, and
    notes whether it was cancelled while waiting."""

    def __init__(self, inner: ScriptedModel) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.cancelled = False

    async def complete(self, request: ModelRequest) -> ModelTurn:
        self.entered.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return await self.inner.complete(request)

    async def count_tokens(self, request: ModelRequest) -> int:
        return await self.inner.count_tokens(request)


def test_a_lease_lost_mid_run_cancels_the_work_and_writes_nothing(
    ledger: Ledger, catalog: Catalog, clock: ManualClock
) -> None:
    """The worker stalls past its lease, another worker claims the run, and the next
    heartbeat finds out: the analysis is cancelled mid-call and nothing of it is stored."""
    run_id = queue_run(ledger)
    model = GatedModel(ScriptedModel(recording_turns()))
    engine = make_engine(ledger, catalog, model, heartbeat_seconds=0.5)

    async def scenario() -> ProcessOutcome:
        processing = asyncio.create_task(engine.process(run_id))
        await asyncio.wait_for(model.entered.wait(), timeout=10)
        # No await between these two lines, so no heartbeat can renew the lease in between.
        clock.advance(LEASE_SECONDS + 1)
        assert ledger.claim(run_id, "other-host:9:x", LEASE_SECONDS) is not None
        return await asyncio.wait_for(processing, timeout=10)

    outcome = asyncio.run(scenario())

    assert outcome == ProcessOutcome("lease_lost")
    assert model.cancelled
    assert model.inner.requests == []  # the gated call never went through
    run = ledger.get_run(run_id)
    assert (run.status, run.attempts, run.lease_owner) == ("running", 2, "other-host:9:x")
    assert ledger.results([run_id]) == []
    first, second = ledger.attempts(run_id)
    assert (first.outcome, first.error_type) == ("lease_lost", "lease_lost")
    assert (second.worker_id, second.outcome) == ("other-host:9:x", None)


def test_a_result_handed_in_after_the_lease_was_taken_over_is_discarded(
    ledger: Ledger, catalog: Catalog, clock: ManualClock
) -> None:
    """The same race, lost at completion time: the heartbeat never ran, the run finished,
    and `complete` refuses to store it because another worker holds the run now."""
    run_id = queue_run(ledger)
    model = GatedModel(ScriptedModel(recording_turns()))
    engine = make_engine(ledger, catalog, model, heartbeat_seconds=3600)

    async def scenario() -> ProcessOutcome:
        processing = asyncio.create_task(engine.process(run_id))
        await asyncio.wait_for(model.entered.wait(), timeout=10)
        clock.advance(LEASE_SECONDS + 1)
        assert ledger.claim(run_id, "other-host:9:x", LEASE_SECONDS) is not None
        model.gate.set()
        return await asyncio.wait_for(processing, timeout=10)

    assert asyncio.run(scenario()) == ProcessOutcome("lease_lost")

    assert model.inner.exhausted  # the work did finish ...
    run = ledger.get_run(run_id)  # ... but nothing of it was written
    assert (run.status, run.lease_owner) == ("running", "other-host:9:x")
    assert ledger.results([run_id]) == []
    assert outcomes(ledger, run_id) == ["lease_lost", None]


def test_an_analyzer_this_worker_does_not_know_fails_the_run_config_error(
    ledger: Ledger, catalog: Catalog
) -> None:
    run_id = queue_run(ledger, analyzer="nosuch")
    model = ScriptedModel([])

    assert process(make_engine(ledger, catalog, model), run_id) == ProcessOutcome("failed")

    run = ledger.get_run(run_id)
    assert (run.status, run.error_type, run.error_retryable) == ("failed", "config_error", False)
    assert run.error_message is not None
    assert "'nosuch'" in run.error_message
    assert model.requests == []
    assert outcomes(ledger, run_id) == ["failed"]


def test_a_crash_inside_the_run_dead_letters_it_with_the_reason(
    ledger: Ledger, catalog: Catalog
) -> None:
    """A bug is not retried in a loop: the run fails `internal_error`, keeping the reason."""
    run_id = queue_run(ledger)
    model = ScriptedModel([RuntimeError("the adapter tripped over a None")])

    assert process(make_engine(ledger, catalog, model), run_id) == ProcessOutcome("failed")

    run = ledger.get_run(run_id)
    assert (run.status, run.error_type, run.error_retryable) == ("failed", "internal_error", False)
    assert run.error_message == "RuntimeError: the adapter tripped over a None"
    assert outcomes(ledger, run_id) == ["failed"]
    assert ledger.results([run_id]) == []


@pytest.mark.parametrize(
    ("attempt", "jitter", "retry_after", "expected"),
    [
        (1, 1.0, None, 10.0),  # base
        (3, 1.0, None, 40.0),  # doubles per attempt
        (3, 0.0, None, 20.0),  # full jitter: between half and all of the ceiling
        (3, 0.5, None, 30.0),
        (10, 1.0, None, 60.0),  # capped at retry_max
        (10, 0.0, None, 30.0),  # jitter applies under the cap
        (1, 0.0, 42.0, 42.0),  # never sooner than the server asked
        (3, 1.0, 5.0, 40.0),  # a shorter server hint does not shorten the backoff
        (10, 1.0, 120.0, 120.0),  # the server's hint wins over the cap: retrying sooner fails
    ],
)
def test_backoff_is_jittered_exponential_capped_and_honours_retry_after(
    ledger: Ledger,
    catalog: Catalog,
    attempt: int,
    jitter: float,
    retry_after: float | None,
    expected: float,
) -> None:
    engine = make_engine(
        ledger,
        catalog,
        ScriptedModel([]),
        jitter=jitter,
        retry_base_seconds=10.0,
        retry_max_seconds=60.0,
    )
    assert engine.backoff(attempt, retry_after) == pytest.approx(expected)


def test_one_summary_line_per_attempt_with_context_and_no_transcript(
    ledger: Ledger, catalog: Catalog, clock: ManualClock
) -> None:
    """Attempt 1 hits a transient error, attempt 2 succeeds, a third delivery is a no-op: two
    `run.finished` lines, each bound to the run, analyzer and conversation; nothing logged
    anywhere quotes the transcript."""
    run_id = queue_run(ledger, conversation_id="c-logs")
    model = ScriptedModel([TransientModelError("overloaded"), *recording_turns()])
    engine = make_engine(ledger, catalog, model)

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        first = process(engine, run_id)
        clock.advance(first.retry_in or 0.0)
        process(engine, run_id)
        process(engine, run_id)

    finished = [event for event in events if event["event"] == "run.finished"]
    assert [(e["attempt"], e["status"]) for e in finished] == [(1, "queued"), (2, "succeeded")]
    for event in finished:
        assert event["run_id"] == run_id
        assert event["analyzer"] == "follow_ups"
        assert event["conversation_id"] == "c-logs"
        assert event["tenant_id"] == "acme"
    assert [e["event"] for e in events if e["event"] != "run.finished"] == ["run.noop"]
    logged = repr(events)
    assert "periwinkle" not in logged
    assert SECRET_PHRASE not in logged
    assert "billed twice" not in logged
