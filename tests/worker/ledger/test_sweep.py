"""The sweeper's view: expired leases, forgotten queued runs, and exhausted runs."""

from __future__ import annotations

from tests.worker.ledger.conftest import QueueRun
from worker.ledger import ATTEMPTS_EXHAUSTED, Ledger, ManualClock

LEASE = 60


def test_expired_leases_and_due_queued_runs_are_listed(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    leased, forgotten = queue_run(), queue_run()
    ledger.claim(leased, "w1", LEASE)
    assert ledger.expired_leases() == []
    assert ledger.due_queued(older_than_seconds=300) == []

    clock.advance(300)

    assert ledger.expired_leases() == [leased]
    assert ledger.due_queued(older_than_seconds=300) == [forgotten]
    assert ledger.due_queued(older_than_seconds=301) == []
    assert ledger.due_queued(older_than_seconds=0, limit=0) == []


def test_sweep_fails_exhausted_runs_and_lists_the_ones_to_enqueue(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    last_try = queue_run(max_attempts=1)
    takeover = queue_run(max_attempts=3)
    forgotten = queue_run()
    fresh_leased = queue_run()
    ledger.claim(last_try, "w1", LEASE)
    ledger.claim(takeover, "w1", LEASE)
    clock.advance(600)
    ledger.claim(fresh_leased, "w2", LEASE)
    just_queued = queue_run(analyzer="escalation_triage")

    report = ledger.sweep(older_than_seconds=300)

    assert report.exhausted == [last_try]
    assert report.to_enqueue == [takeover, forgotten]
    run = ledger.get_run(last_try)
    assert (run.status, run.error_type) == ("failed", ATTEMPTS_EXHAUSTED)
    assert [attempt.outcome for attempt in ledger.attempts(last_try)] == ["expired"]
    assert ledger.get_run(takeover).status == "running"  # the next claim takes it over
    assert ledger.get_run(just_queued).status == "queued"


def test_sweep_asks_for_a_run_at_most_once_per_interval(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    clock.advance(300)
    assert ledger.sweep(older_than_seconds=300).to_enqueue == [run_id]
    clock.advance(60)
    assert ledger.sweep(older_than_seconds=300).to_enqueue == []
    clock.advance(240)
    assert ledger.sweep(older_than_seconds=300).to_enqueue == [run_id]


def test_a_swept_takeover_is_claimed_as_the_next_attempt(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    ledger.claim(run_id, "w1", LEASE)
    clock.advance(LEASE)
    assert ledger.sweep().to_enqueue == [run_id]
    claimed = ledger.claim(run_id, "w2", LEASE)
    assert claimed is not None
    assert claimed.attempt == 2
    assert ledger.sweep().to_enqueue == []


def test_sweep_respects_its_limit(ledger: Ledger, clock: ManualClock, queue_run: QueueRun) -> None:
    ids = [queue_run() for _ in range(3)]
    clock.advance(300)
    first = ledger.sweep(limit=2).to_enqueue
    second = ledger.sweep(limit=2).to_enqueue
    assert len(first) == 2
    assert sorted(first + second) == sorted(ids)
