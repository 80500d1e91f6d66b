"""Recording runs: queued or skipped, once per idempotency key."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.worker.ledger.conftest import make_conversation
from worker.ledger import (
    ConversationNotFound,
    Ledger,
    LedgerError,
    ManualClock,
    RunNotFound,
    RunPlan,
)

PLANS = [
    RunPlan("refund_review", "3", max_attempts=4),
    RunPlan("vendor_onboarding_check", "1", skip_reason="outcome 'resolved' not in trigger"),
]


def test_plans_become_queued_and_skipped_runs(ledger: Ledger, clock: ManualClock) -> None:
    ref = ledger.save_conversation(make_conversation())
    queued, skipped = ledger.record_runs(ref.pk, PLANS, trigger="webhook")

    assert queued.created
    assert skipped.created
    assert queued.id != skipped.id
    assert len(queued.id) == 32
    assert (queued.status, queued.analyzer, queued.analyzer_version) == (
        "queued",
        "refund_review",
        "3",
    )
    assert (queued.attempts, queued.max_attempts, queued.attempt_budget) == (0, 4, 4)
    assert queued.available_at == queued.created_at == clock()
    assert queued.trigger == "webhook"
    assert queued.idempotency_key is None

    assert skipped.status == "skipped"
    assert skipped.skip_reason == "outcome 'resolved' not in trigger"
    assert skipped.finished_at == clock()
    assert ledger.get_run(skipped.id) == skipped


def test_a_skipped_run_has_a_skipped_result(ledger: Ledger) -> None:
    ref = ledger.save_conversation(make_conversation())
    queued, skipped = ledger.record_runs(ref.pk, PLANS, trigger="cli")
    [result] = ledger.results([queued.id, skipped.id])  # the queued one has none yet
    assert (result.run_id, result.status, result.analyzer) == (
        skipped.id,
        "skipped",
        "vendor_onboarding_check",
    )
    assert (result.conversation_id, result.tenant_id) == ("c-1", "acme")
    assert result.skip_reason == skipped.skip_reason


def test_a_repeated_submission_returns_the_runs_it_recorded_first(ledger: Ledger) -> None:
    ref = ledger.save_conversation(make_conversation())
    first = ledger.record_runs(ref.pk, PLANS, trigger="webhook", idempotency_prefix="wh:evt-1")
    again = ledger.record_runs(ref.pk, PLANS, trigger="webhook", idempotency_prefix="wh:evt-1")

    assert [run.id for run in again] == [run.id for run in first]
    assert [run.created for run in again] == [False, False]
    assert first[0].idempotency_key == "wh:evt-1:refund_review"
    assert ledger.counts_by_status() == {
        "queued": 1,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "skipped": 1,
    }


def test_another_key_records_new_runs(ledger: Ledger) -> None:
    ref = ledger.save_conversation(make_conversation())
    first = ledger.record_runs(ref.pk, PLANS[:1], trigger="cli", idempotency_prefix="cli:1")
    other = ledger.record_runs(ref.pk, PLANS[:1], trigger="cli", idempotency_prefix="cli:2")
    unkeyed = ledger.record_runs(ref.pk, PLANS[:1], trigger="cli")
    assert len({first[0].id, other[0].id, unkeyed[0].id}) == 3
    assert other[0].created
    assert unkeyed[0].created


def test_a_new_analyzer_under_a_known_key_is_added(ledger: Ledger) -> None:
    ref = ledger.save_conversation(make_conversation())
    [first] = ledger.record_runs(ref.pk, PLANS[:1], trigger="webhook", idempotency_prefix="k")
    runs = ledger.record_runs(ref.pk, PLANS, trigger="webhook", idempotency_prefix="k")
    assert [run.created for run in runs] == [False, True]
    assert runs[0].id == first.id


def test_concurrent_identical_submissions_record_each_run_once(ledger: Ledger) -> None:
    ref = ledger.save_conversation(make_conversation())

    def submit(_: int) -> list[str]:
        runs = ledger.record_runs(ref.pk, PLANS, trigger="webhook", idempotency_prefix="wh:9")
        return [run.id for run in runs]

    with ThreadPoolExecutor(max_workers=8) as pool:
        submissions = list(pool.map(submit, range(8)))
    assert all(ids == submissions[0] for ids in submissions)
    assert sum(ledger.counts_by_status().values()) == 2


def test_a_key_that_belongs_to_another_conversation_is_refused(ledger: Ledger) -> None:
    ours = ledger.save_conversation(make_conversation("c-1"))
    other = ledger.save_conversation(make_conversation("c-2"))
    ledger.record_runs(ours.pk, PLANS[:1], trigger="cli", idempotency_prefix="same")
    with pytest.raises(LedgerError, match="already belongs to run"):
        ledger.record_runs(other.pk, PLANS[:1], trigger="cli", idempotency_prefix="same")


def test_an_analyzer_planned_twice_under_one_key_is_refused(ledger: Ledger) -> None:
    ref = ledger.save_conversation(make_conversation())
    twice = [PLANS[0], PLANS[0]]
    with pytest.raises(LedgerError, match=r"\['refund_review@3'\] planned twice"):
        ledger.record_runs(ref.pk, twice, trigger="cli", idempotency_prefix="p")
    assert sum(ledger.counts_by_status().values()) == 0


def test_a_rerun_points_at_the_run_it_repeats(ledger: Ledger) -> None:
    ref = ledger.save_conversation(make_conversation())
    [original] = ledger.record_runs(ref.pk, PLANS[:1], trigger="webhook")
    [rerun] = ledger.record_runs(ref.pk, PLANS[:1], trigger="rerun", rerun_of=original.id)
    assert (rerun.trigger, rerun.rerun_of) == ("rerun", original.id)
    with pytest.raises(RunNotFound, match="'nope'"):
        ledger.record_runs(ref.pk, PLANS[:1], trigger="rerun", rerun_of="nope")


def test_runs_need_a_stored_conversation_and_a_known_trigger(ledger: Ledger) -> None:
    with pytest.raises(ConversationNotFound, match="pk 99"):
        ledger.record_runs(99, PLANS, trigger="cli")
    ref = ledger.save_conversation(make_conversation())
    with pytest.raises(LedgerError, match="unknown trigger 'cron'"):
        ledger.record_runs(ref.pk, PLANS, trigger="cron")  # type: ignore[arg-type]


def test_a_plan_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="at least 1, got 0"):
        RunPlan("refund_review", "1", max_attempts=0)
