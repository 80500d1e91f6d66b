"""`Ledger.release`: a worker shutting down hands a claimed run back without spending it."""

from __future__ import annotations

from tests.worker.ledger.conftest import QueueRun
from worker.ledger import Ledger, ManualClock

LEASE = 60


def test_a_released_run_is_queued_due_now_and_keeps_its_attempt_budget(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    claimed = ledger.claim(run_id, "w1", LEASE)
    assert claimed is not None

    assert ledger.release(run_id, "w1", reason="shutting down", attempt=claimed.attempt)

    run = ledger.get_run(run_id)
    assert (run.status, run.lease_owner, run.lease_expires_at) == ("queued", None, None)
    assert run.available_at == clock()
    assert run.finished_at is None
    [attempt] = ledger.attempts(run_id)
    assert (attempt.outcome, attempt.error_type) == ("retry", "worker_shutdown")
    again = ledger.claim(run_id, "w2", LEASE)
    assert again is not None
    assert again.attempt == 2


def test_releasing_the_last_attempt_does_not_dead_letter_the_run(
    ledger: Ledger, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    for worker in ("w1", "w2", "w3"):  # max_attempts is 3: the third claim is the last
        claimed = ledger.claim(run_id, worker, LEASE)
        assert claimed is not None
        assert ledger.release(run_id, worker, reason="shutting down", attempt=claimed.attempt)
    run = ledger.get_run(run_id)
    assert run.status == "queued"
    last = ledger.claim(run_id, "w4", LEASE)
    assert last is not None
    assert last.attempt == 4
    assert last.max_attempts == 4


def test_only_the_lease_holder_may_release(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    claimed = ledger.claim(run_id, "w1", LEASE)
    assert claimed is not None
    assert not ledger.release(run_id, "w2", reason="not mine")
    clock.advance(LEASE)
    taken = ledger.claim(run_id, "w2", LEASE)
    assert taken is not None
    assert not ledger.release(run_id, "w1", reason="too late", attempt=claimed.attempt)
    assert ledger.get_run(run_id).lease_owner == "w2"
