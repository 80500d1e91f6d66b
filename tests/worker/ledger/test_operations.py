"""What operators do: retry failed runs, count, list, and read results."""

from __future__ import annotations

import pytest

from tests.worker.ledger.conftest import QueueRun, make_conversation, make_result
from worker.ledger import InvalidTransition, Ledger, ManualClock, RunNotFound, RunPlan

LEASE = 60


def _exhaust(ledger: Ledger, run_id: str) -> None:
    while (claimed := ledger.claim(run_id, "w", LEASE)) is not None:
        ledger.retry_later(run_id, "w", error_type="timeout", message="slow", delay_seconds=0)
        assert claimed.attempt <= 10


def test_requeue_failed_gives_a_failed_run_a_fresh_budget(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run(max_attempts=2)
    _exhaust(ledger, run_id)
    assert ledger.get_run(run_id).status == "failed"
    clock.advance(3600)

    assert ledger.requeue_failed([run_id]) == [run_id]

    run = ledger.get_run(run_id)
    assert (run.status, run.available_at, run.attempts, run.max_attempts) == (
        "queued",
        clock(),
        2,
        4,
    )
    assert (run.error_type, run.error_message, run.finished_at) == (None, None, None)
    claimed = ledger.claim(run_id, "w", LEASE)
    assert claimed is not None
    assert claimed.attempt == 3
    assert len(ledger.attempts(run_id)) == 3  # the history is kept


def test_a_permanently_failed_run_gets_its_whole_budget_again(
    ledger: Ledger, queue_run: QueueRun
) -> None:
    run_id = queue_run(max_attempts=3)
    ledger.claim(run_id, "w", LEASE)
    ledger.fail(run_id, "w", error_type="bad_config", message="fixed since")
    ledger.requeue_failed([run_id])
    run = ledger.get_run(run_id)
    assert (run.attempts, run.max_attempts) == (1, 4)


def test_requeue_failed_without_ids_takes_every_failed_run(
    ledger: Ledger, queue_run: QueueRun
) -> None:
    failed = [queue_run(max_attempts=1) for _ in range(2)]
    untouched = queue_run()
    for run_id in failed:
        _exhaust(ledger, run_id)
    assert sorted(ledger.requeue_failed()) == sorted(failed)
    assert ledger.requeue_failed() == []
    assert ledger.get_run(untouched).attempts == 0


def test_requeue_failed_refuses_runs_that_did_not_fail(ledger: Ledger, queue_run: QueueRun) -> None:
    ref = ledger.save_conversation(make_conversation())
    [skipped] = ledger.record_runs(
        ref.pk, [RunPlan("a", "1", skip_reason="sampled out")], trigger="cli"
    )
    succeeded, failed = queue_run(), queue_run(max_attempts=1)
    ledger.claim(succeeded, "w", LEASE)
    ledger.complete(succeeded, "w", make_result(succeeded))
    _exhaust(ledger, failed)

    with pytest.raises(InvalidTransition) as refused:
        ledger.requeue_failed([failed, skipped.id])
    assert str(refused.value) == (
        f"cannot retry run {skipped.id!r}: it is skipped, and only failed runs can be retried"
    )
    assert (refused.value.run_id, refused.value.status) == (skipped.id, "skipped")
    with pytest.raises(InvalidTransition, match=f"{succeeded!r}: it is succeeded"):
        ledger.requeue_failed([succeeded])
    with pytest.raises(RunNotFound, match="'nope'"):
        ledger.requeue_failed(["nope"])
    assert ledger.get_run(failed).status == "failed"  # all or nothing


def test_counts_by_status_overall_and_per_analyzer(ledger: Ledger, queue_run: QueueRun) -> None:
    done = queue_run()
    queue_run()
    queue_run(analyzer="escalation_triage")
    ledger.claim(done, "w", LEASE)
    ledger.complete(done, "w", make_result(done))

    assert ledger.counts_by_status() == {
        "queued": 2,
        "running": 0,
        "succeeded": 1,
        "failed": 0,
        "skipped": 0,
    }
    assert ledger.counts_by_status("escalation_triage")["queued"] == 1
    assert ledger.counts_by_status("unknown") == dict.fromkeys(
        ["queued", "running", "succeeded", "failed", "skipped"], 0
    )
    by_analyzer = ledger.counts_by_analyzer()
    assert by_analyzer["refund_review"]["succeeded"] == 1
    assert by_analyzer["escalation_triage"]["queued"] == 1


def test_list_runs_filters_and_puts_the_newest_first(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    old = queue_run()
    clock.advance(1)
    new = queue_run(analyzer="escalation_triage")
    ledger.claim(new, "w", LEASE)
    assert [run.id for run in ledger.list_runs()] == [new, old]
    assert [run.id for run in ledger.list_runs("queued")] == [old]
    assert [run.id for run in ledger.list_runs(analyzer="escalation_triage")] == [new]
    assert [run.id for run in ledger.list_runs(limit=1)] == [new]


def test_unknown_run_ids_are_named_in_the_error(ledger: Ledger) -> None:
    with pytest.raises(RunNotFound, match="no analysis run with id 'r-404'"):
        ledger.get_run("r-404")
    with pytest.raises(RunNotFound, match="'r-404'"):
        ledger.results(["r-404"])
    with pytest.raises(RunNotFound, match="'r-404'"):
        ledger.attempts("r-404")
    assert ledger.results([]) == []
