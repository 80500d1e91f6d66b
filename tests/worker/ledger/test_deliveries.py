"""The outbox: deliveries written with the result, routed by CEL, claimed, parked, dead-lettered
and replayed (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from schemas.analyzer import JsonlSink, SinkRoute, SlackSink, WebhookSink
from schemas.result import RunError
from schemas.snapshot import AnalyzerSnapshot
from tests.worker.ledger.conftest import QueueRun, make_conversation, make_result
from worker.catalog import Catalog
from worker.ledger import Ledger, ManualClock, RunPlan
from worker.ledger import deliveries as outbox
from worker.ledger.deliveries import DeliveryLedger

ROUTES: list[SinkRoute] = [
    SlackSink(type="slack", channel="#escalations", when='status == "succeeded"'),
    SlackSink(type="slack", channel="#failures", when='status == "failed"'),
    WebhookSink(type="webhook", url="http://127.0.0.1:9/hook"),
    JsonlSink(type="jsonl", path="out.jsonl", when="outputs.nothing.size() > 0"),
]


@pytest.fixture(autouse=True)
def routes() -> Iterator[None]:
    outbox.use_routes(
        lambda name: (ROUTES, ["refund_decision"]) if name == "refund_review" else None
    )
    yield
    outbox.use_routes(None)


def _complete(ledger: Ledger, queue_run: QueueRun, status: str = "succeeded") -> str:
    run_id = queue_run()
    assert ledger.claim(run_id, "w1", 60) is not None
    error = RunError(type="boom", message="broke") if status == "failed" else None
    assert ledger.complete(run_id, "w1", make_result(run_id, status=status, error=error))
    return run_id


def test_completion_writes_one_delivery_per_matching_route(
    ledger: Ledger, queue_run: QueueRun
) -> None:
    run_id = _complete(ledger, queue_run)
    store = DeliveryLedger(ledger.engine)
    with store.read() as connection:
        rows = outbox.list_deliveries(connection, run_id=run_id)
    by_destination = {r.destination: r for r in rows}
    assert set(by_destination) == {"#escalations", "http://127.0.0.1:9/hook", "out.jsonl"}
    assert by_destination["#escalations"].status == "pending"
    # A route whose `when` cannot be evaluated is dead-lettered with the reason, not dropped.
    assert by_destination["out.jsonl"].status == "dead"
    assert by_destination["out.jsonl"].dead_reason == "routing_error"


def test_failed_runs_are_routable(ledger: Ledger, queue_run: QueueRun) -> None:
    run_id = _complete(ledger, queue_run, status="failed")
    with DeliveryLedger(ledger.engine).read() as connection:
        destinations = {r.destination for r in outbox.list_deliveries(connection, run_id=run_id)}
    assert "#failures" in destinations
    assert "#escalations" not in destinations


def test_no_result_no_deliveries(ledger: Ledger, queue_run: QueueRun) -> None:
    """A completion without the lease writes nothing: result and outbox commit together."""
    run_id = queue_run()
    assert ledger.claim(run_id, "w1", 60) is not None
    assert not ledger.complete(run_id, "intruder", make_result(run_id))
    with DeliveryLedger(ledger.engine).read() as connection:
        assert outbox.list_deliveries(connection, run_id=run_id) == []


def test_claim_park_dead_letter_and_replay(
    ledger: Ledger, queue_run: QueueRun, clock: ManualClock
) -> None:
    run_id = _complete(ledger, queue_run)
    store = DeliveryLedger(ledger.engine, now=clock)
    delivery = outbox.delivery_id(run_id, "slack", "#escalations")
    with store.write() as c:
        claimed = outbox.claim(c, clock(), delivery, "w1", 60)
        assert claimed is not None
        assert claimed.attempts == 1
        assert outbox.claim(c, clock(), delivery, "w2", 60) is None  # leased
        assert (
            outbox.retry_or_dead(
                c, clock(), delivery, "w1", error="429", reason="rate", delay_seconds=30
            )
            == "pending"
        )
        assert outbox.claim(c, clock(), delivery, "w1", 60) is None  # parked until due
        assert delivery not in outbox.due(c, clock())
    clock.advance(31)
    with store.write() as c:
        assert delivery in outbox.due(c, clock())
        assert outbox.claim(c, clock(), delivery, "w1", 60) is not None
        assert outbox.dead(c, clock(), delivery, "w1", reason="slack_invalid_auth", error="no")
        assert outbox.counts_by_status(c)["dead"] == 2  # with the routing error
        assert outbox.replay(c, clock(), [delivery]) == [delivery]
        assert outbox.replay(c, clock(), [delivery]) == []  # pending already
        again = outbox.claim(c, clock(), delivery, "w1", 60)
        assert again is not None
        assert again.attempts == 1


def test_waking_a_runs_deliveries_marks_and_returns_its_pending_ones_only(
    ledger: Ledger, queue_run: QueueRun, clock: ManualClock
) -> None:
    run_id = _complete(ledger, queue_run)
    other = _complete(ledger, queue_run)
    store = DeliveryLedger(ledger.engine, now=clock)
    with store.read() as c:
        pending = sorted(r.id for r in outbox.list_deliveries(c, run_id=run_id, status="pending"))
        dead = [r.id for r in outbox.list_deliveries(c, run_id=run_id, status="dead")]

    assert store.wake_pending(run_id) == pending
    with store.read() as c:
        due = outbox.due(c, clock(), rewake_after_seconds=300)
    assert not set(pending) & set(due)  # woken: the sweeper leaves them to their messages
    assert outbox.delivery_id(other, "slack", "#escalations") in due  # another run's: untouched
    assert dead  # the run has a dead-lettered route too, and it is not woken
    assert not set(dead) & set(pending)


def test_a_woken_delivery_is_not_woken_again_while_its_message_may_still_wait(
    ledger: Ledger, queue_run: QueueRun, clock: ManualClock
) -> None:
    # The defect: the sweeper sent a wake-up for every pending delivery at every sweep, so one
    # waiting behind a long queue got a new message every ten seconds and the queue kept growing.
    run_id = _complete(ledger, queue_run)
    store = DeliveryLedger(ledger.engine, now=clock)
    delivery = outbox.delivery_id(run_id, "slack", "#escalations")
    with store.read() as c:
        assert delivery in outbox.due(c, clock(), rewake_after_seconds=300)
    store.mark_woken([delivery])
    clock.advance(299)
    with store.read() as c:
        assert delivery not in outbox.due(c, clock(), rewake_after_seconds=300)
        assert delivery in outbox.due(c, clock())  # without the rule: every sweep
    clock.advance(2)  # the wake-up must have been lost: wake it once more
    with store.read() as c:
        assert delivery in outbox.due(c, clock(), rewake_after_seconds=300)
    store.mark_woken([delivery])
    with store.write() as c:
        assert outbox.claim(c, clock(), delivery, "w1", 60) is not None
        outbox.retry_or_dead(
            c, clock(), delivery, "w1", error="429", reason="rate", delay_seconds=5
        )
    clock.advance(6)  # a parked retry is woken as soon as it is due, whatever woke it before
    with store.read() as c:
        assert delivery in outbox.due(c, clock(), rewake_after_seconds=300)
    store.mark_woken([delivery])
    with store.write() as c:
        assert outbox.claim(c, clock(), delivery, "dying", 60) is not None
    clock.advance(61)  # and a dead worker's delivery is taken over when its lease expires
    with store.read() as c:
        assert delivery in outbox.due(c, clock(), rewake_after_seconds=300)


def test_an_expired_lease_is_taken_over(
    ledger: Ledger, queue_run: QueueRun, clock: ManualClock
) -> None:
    run_id = _complete(ledger, queue_run)
    store = DeliveryLedger(ledger.engine, now=clock)
    delivery = outbox.delivery_id(run_id, "slack", "#escalations")
    with store.write() as c:
        assert outbox.claim(c, clock(), delivery, "dead-worker", 60) is not None
    clock.advance(61)
    with store.write() as c:
        assert delivery in outbox.due(c, clock())
        taken = outbox.claim(c, clock(), delivery, "w2", 60)
        assert taken is not None
        assert taken.attempts == 2
        assert not outbox.mark_delivered(c, clock(), delivery, "dead-worker", None)
        assert outbox.mark_delivered(c, clock(), delivery, "w2", {"ts": {"0": "1.0"}})


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    rng = random.Random(7)  # noqa: S311 - seeded jitter
    first = [outbox.backoff_seconds(1, None, rng=rng) for _ in range(50)]
    fifth = [outbox.backoff_seconds(5, None, rng=rng) for _ in range(50)]
    assert all(2.5 <= d <= 5 for d in first)
    assert all(40 <= d <= 80 for d in fifth)
    assert len(set(first)) > 1
    assert outbox.backoff_seconds(1, 120.0, rng=rng) == 120.0
    assert outbox.backoff_seconds(40, None, cap=60, rng=rng) <= 60


def test_a_run_failed_without_a_result_is_routed_too(ledger: Ledger, queue_run: QueueRun) -> None:
    run_id = queue_run()
    assert ledger.claim(run_id, "w1", 60) is not None
    assert ledger.fail(run_id, "w1", error_type="config_error", message="no such tool")
    store = DeliveryLedger(ledger.engine)
    with store.read() as connection:
        destinations = {r.destination for r in outbox.list_deliveries(connection, run_id=run_id)}
        result = outbox.stored_or_failed_result(connection, run_id)
    assert "#failures" in destinations
    assert "#escalations" not in destinations
    assert result is not None
    assert result.error is not None
    assert result.error.type == "config_error"


def test_routing_follows_the_runs_snapshot_not_todays_routes(ledger: Ledger) -> None:
    """The run recorded v1's sinks; the catalog (route source) has moved on since."""
    spec = Catalog.load([], [], builtins=True).analyzers["follow_ups"]
    pinned = spec.model_copy(update={"sinks": [SlackSink(type="slack", channel="#pinned")]})
    snapshot = AnalyzerSnapshot(spec=pinned, brief="b")
    ref = ledger.save_conversation(make_conversation())
    [run] = ledger.record_runs(
        ref.pk, [RunPlan("follow_ups", spec.version, snapshot=snapshot)], trigger="cli"
    )
    assert ledger.claim(run.id, "w1", 60) is not None
    result = make_result(run.id, analyzer="follow_ups").model_copy(
        update={"analyzer_version": spec.version, "outputs": {}}
    )
    assert ledger.complete(run.id, "w1", result)
    with DeliveryLedger(ledger.engine).read() as connection:
        rows = outbox.list_deliveries(connection, run_id=run.id)
    assert [r.destination for r in rows] == ["#pinned"]
