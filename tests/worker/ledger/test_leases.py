"""Claiming, heartbeating and finishing runs: the lease decides who may write."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from schemas.result import RunError
from tests.worker.ledger.conftest import QueueRun, make_result
from worker.ledger import ATTEMPTS_EXHAUSTED, Ledger, LedgerError, ManualClock, RunNotFound

LEASE = 60


def test_a_claim_leases_the_run_to_one_worker(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    claimed = ledger.claim(run_id, "host-a:1:t1", LEASE)

    assert claimed is not None
    assert (claimed.run_id, claimed.analyzer, claimed.analyzer_version) == (
        run_id,
        "refund_review",
        "1",
    )
    assert (claimed.attempt, claimed.max_attempts, claimed.trigger) == (1, 3, "webhook")
    assert claimed.lease_expires_at == clock() + timedelta(seconds=LEASE)
    run = ledger.get_run(run_id)
    assert (run.status, run.lease_owner, run.attempts, run.started_at) == (
        "running",
        "host-a:1:t1",
        1,
        clock(),
    )
    [attempt] = ledger.attempts(run_id)
    assert (attempt.attempt, attempt.worker_id, attempt.outcome) == (1, "host-a:1:t1", None)


def test_a_leased_run_cannot_be_claimed_again(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    assert ledger.claim(run_id, "w1", LEASE) is not None
    clock.advance(LEASE - 1)
    assert ledger.claim(run_id, "w2", LEASE) is None
    assert ledger.claim(run_id, "w1", LEASE) is None  # a redelivery to the holder: a no-op too
    assert ledger.get_run(run_id).lease_owner == "w1"


def test_a_claim_after_the_lease_expired_takes_over_as_the_next_attempt(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    ledger.claim(run_id, "w1", LEASE)
    clock.advance(LEASE)

    claimed = ledger.claim(run_id, "w2", LEASE)

    assert claimed is not None
    assert claimed.attempt == 2
    assert ledger.get_run(run_id).lease_owner == "w2"
    first, second = ledger.attempts(run_id)
    assert (first.outcome, first.error_type, first.finished_at) == (
        "expired",
        "lease_expired",
        clock(),
    )
    assert first.error_message is not None
    assert "attempt 2 went to w2" in first.error_message
    assert (second.worker_id, second.outcome) == ("w2", None)


def test_a_heartbeat_extends_the_lease_of_its_holder(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    ledger.claim(run_id, "w1", LEASE)
    clock.advance(LEASE - 5)
    assert ledger.heartbeat(run_id, "w1", LEASE)
    clock.advance(30)  # past the first lease, inside the renewed one
    assert ledger.claim(run_id, "w2", LEASE) is None
    assert ledger.get_run(run_id).lease_expires_at == clock() + timedelta(seconds=LEASE - 30)


def test_a_stale_worker_learns_from_its_heartbeat_that_the_lease_is_lost(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    ledger.claim(run_id, "w1", LEASE)
    clock.advance(LEASE + 1)
    ledger.claim(run_id, "w2", LEASE)
    expires = ledger.get_run(run_id).lease_expires_at

    assert not ledger.heartbeat(run_id, "w1", LEASE)

    run = ledger.get_run(run_id)
    assert (run.lease_owner, run.lease_expires_at) == ("w2", expires)
    first, _ = ledger.attempts(run_id)
    assert first.outcome == "lease_lost"
    assert first.error_message == "heartbeat refused: the run is now running attempt 2 under 'w2'"


def test_complete_stores_the_result_and_releases_the_lease(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    claimed = ledger.claim(run_id, "w1", LEASE)
    assert claimed is not None
    clock.advance(42)
    result = make_result(claimed)

    assert ledger.complete(run_id, "w1", result)

    run = ledger.get_run(run_id)
    assert (run.status, run.finished_at, run.lease_owner, run.lease_expires_at) == (
        "succeeded",
        clock(),
        None,
        None,
    )
    assert (run.error_type, run.error_message, run.error_retryable) == (None, None, None)
    assert run.cost_usd == pytest.approx(0.033)
    assert (run.input_tokens, run.output_tokens) == (1200, 300)
    assert (run.cache_read_input_tokens, run.cache_creation_input_tokens) == (5000, 800)
    assert ledger.results([run_id]) == [result]
    [attempt] = ledger.attempts(run_id)
    assert (attempt.outcome, attempt.finished_at) == ("succeeded", clock())
    assert ledger.claim(run_id, "w2", LEASE) is None  # finished: a redelivery is a no-op


def test_complete_with_a_failed_result_stores_its_error(
    ledger: Ledger, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    ledger.claim(run_id, "w1", LEASE)
    error = RunError(type="missing_outputs", message="no refund_decision recorded")
    assert ledger.complete(run_id, "w1", make_result(run_id, status="failed", error=error))
    run = ledger.get_run(run_id)
    assert (run.status, run.error_type, run.error_message, run.error_retryable) == (
        "failed",
        "missing_outputs",
        "no refund_decision recorded",
        False,
    )
    [attempt] = ledger.attempts(run_id)
    assert (attempt.outcome, attempt.error_type) == ("failed", "missing_outputs")


def test_a_stale_worker_cannot_complete_and_writes_nothing_to_the_run(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    ledger.claim(run_id, "w1", LEASE)
    clock.advance(LEASE)
    ledger.claim(run_id, "w2", LEASE)
    before = ledger.get_run(run_id)

    assert not ledger.complete(run_id, "w1", make_result(run_id))

    assert ledger.get_run(run_id) == before
    assert ledger.results([run_id]) == []
    first, second = ledger.attempts(run_id)
    assert (first.outcome, second.outcome) == ("lease_lost", None)
    assert first.error_message is not None
    assert first.error_message.startswith("complete refused")


def test_a_late_result_counts_when_nobody_took_the_run_over(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    ledger.claim(run_id, "w1", LEASE)
    clock.advance(LEASE * 2)
    assert ledger.complete(run_id, "w1", make_result(run_id))
    assert ledger.get_run(run_id).status == "succeeded"


def test_a_result_for_another_run_is_refused(ledger: Ledger, queue_run: QueueRun) -> None:
    run_id = queue_run()
    ledger.claim(run_id, "w1", LEASE)
    with pytest.raises(LedgerError, match="result of run 'other' was handed in for run"):
        ledger.complete(run_id, "w1", make_result("other"))


def test_retry_later_backs_off_before_the_next_attempt(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    ledger.claim(run_id, "w1", LEASE)

    status = ledger.retry_later(
        run_id, "w1", error_type="transient_model_error", message="529", delay_seconds=30
    )

    assert status == "queued"
    run = ledger.get_run(run_id)
    assert (run.status, run.lease_owner, run.available_at) == (
        "queued",
        None,
        clock() + timedelta(seconds=30),
    )
    assert (run.error_type, run.error_message, run.error_retryable) == (
        "transient_model_error",
        "529",
        True,
    )
    [attempt] = ledger.attempts(run_id)
    assert (attempt.outcome, attempt.error_type, attempt.error_message) == (
        "retry",
        "transient_model_error",
        "529",
    )
    clock.advance(29)
    assert ledger.claim(run_id, "w2", LEASE) is None
    clock.advance(1)
    claimed = ledger.claim(run_id, "w2", LEASE)
    assert claimed is not None
    assert claimed.attempt == 2


def test_retry_later_on_the_last_attempt_dead_letters_the_run(
    ledger: Ledger, queue_run: QueueRun
) -> None:
    run_id = queue_run(max_attempts=2)
    for worker in ("w1", "w2"):
        ledger.claim(run_id, worker, LEASE)
        status = ledger.retry_later(
            run_id, worker, error_type="rate_limited", message="429 again", delay_seconds=0
        )
    assert status == "failed"
    run = ledger.get_run(run_id)
    assert (run.status, run.error_type) == ("failed", ATTEMPTS_EXHAUSTED)
    assert run.error_message == "attempts_exhausted: rate_limited: 429 again (attempt 2 of 2)"
    assert [attempt.outcome for attempt in ledger.attempts(run_id)] == ["retry", "failed"]
    assert ledger.claim(run_id, "w3", LEASE) is None


def test_retry_later_without_the_lease_changes_nothing(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    ledger.claim(run_id, "w1", LEASE)
    clock.advance(LEASE)
    ledger.claim(run_id, "w2", LEASE)
    before = ledger.get_run(run_id)
    status = ledger.retry_later(run_id, "w1", error_type="x", message="y", delay_seconds=5)
    assert status == "lease_lost"
    assert ledger.get_run(run_id) == before


def test_fail_dead_letters_the_run_with_its_reason(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    ledger.claim(run_id, "w1", LEASE)
    assert ledger.fail(run_id, "w1", error_type="invalid_analyzer", message="no such tool 'x'")
    run = ledger.get_run(run_id)
    assert (run.status, run.error_type, run.error_message, run.error_retryable) == (
        "failed",
        "invalid_analyzer",
        "no such tool 'x'",
        False,
    )
    assert (run.finished_at, run.lease_owner) == (clock(), None)
    [attempt] = ledger.attempts(run_id)
    assert (attempt.outcome, attempt.error_type) == ("failed", "invalid_analyzer")
    assert not ledger.fail(run_id, "w1", error_type="again", message="twice")
    assert ledger.get_run(run_id).error_type == "invalid_analyzer"


def test_a_lease_that_expires_on_the_last_attempt_fails_the_run(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run(max_attempts=1)
    ledger.claim(run_id, "w1", LEASE)
    clock.advance(LEASE)

    assert ledger.claim(run_id, "w2", LEASE) is None

    run = ledger.get_run(run_id)
    assert (run.status, run.error_type, run.lease_owner) == ("failed", ATTEMPTS_EXHAUSTED, None)
    assert run.error_message is not None
    assert run.error_message.startswith("attempts_exhausted:")
    [attempt] = ledger.attempts(run_id)
    assert attempt.outcome == "expired"
    assert not ledger.complete(run_id, "w1", make_result(run_id))  # too late now


def test_the_attempt_number_fences_two_claims_by_one_worker_id(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    first = ledger.claim(run_id, "w1", LEASE)
    clock.advance(LEASE)
    second = ledger.claim(run_id, "w1", LEASE)
    assert first is not None
    assert second is not None
    assert not ledger.heartbeat(run_id, "w1", LEASE, attempt=first.attempt)
    assert not ledger.complete(run_id, "w1", make_result(run_id), attempt=first.attempt)
    assert ledger.complete(run_id, "w1", make_result(run_id), attempt=second.attempt)


def test_claims_of_unknown_runs_and_bad_leases_are_errors(
    ledger: Ledger, queue_run: QueueRun
) -> None:
    with pytest.raises(RunNotFound, match="no analysis run with id 'missing'"):
        ledger.claim("missing", "w1", LEASE)
    with pytest.raises(RunNotFound, match="'missing'"):
        ledger.heartbeat("missing", "w1", LEASE)
    with pytest.raises(ValueError, match="lease_seconds must be positive"):
        ledger.claim(queue_run(), "w1", 0)


def test_a_naive_clock_is_refused(ledger: Ledger, queue_run: QueueRun) -> None:
    run_id = queue_run()
    naive = Ledger(ledger.engine, now=lambda: datetime(2026, 11, 20, 10, 0))
    with pytest.raises(LedgerError, match="naive datetime"):
        naive.claim(run_id, "w1", LEASE)
