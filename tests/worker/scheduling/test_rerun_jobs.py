"""Rerun jobs on a real SQLite ledger with a fake model: selection, dry run, new results beside
the old, budgets, cancellation, resuming a job whose process died, and dry-run writes."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from schemas.rerun import JobSummary, RerunSelection
from worker.catalog import Catalog
from worker.ledger import Ledger, ManualClock
from worker.ledger.jobs import JobLedger, JobNotFound, job_runs
from worker.ledger.tables import analysis_runs, rerun_job_items
from worker.scheduling import (
    DryRun,
    JobBusy,
    SelectionError,
    cancel_job,
    job_summary,
    start_rerun_job,
)

from .helpers import PolicyModel, conversation, job_runner, seed


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def start(ledger: Ledger, catalog: Catalog, **options: object) -> JobSummary:
    selection = options.pop("selection", RerunSelection(analyzer="follow_ups"))
    assert isinstance(selection, RerunSelection)
    started = start_rerun_job(
        ledger,
        catalog,
        selection,
        default_model="claude-sonnet-5-5",
        **options,  # type: ignore[arg-type]
    )
    assert isinstance(started, JobSummary)
    return started


def runs_of(ledger: Ledger) -> list[sa.Row[tuple[str, int, str, str | None, str]]]:
    with ledger.engine.connect() as connection:
        return list(
            connection.execute(
                sa.select(
                    analysis_runs.c.id,
                    analysis_runs.c.conversation_pk,
                    analysis_runs.c.trigger,
                    analysis_runs.c.rerun_of,
                    analysis_runs.c.status,
                ).order_by(analysis_runs.c.created_at, analysis_runs.c.id)
            )
        )


def test_a_rerun_records_one_new_run_per_conversation_beside_the_old(
    any_ledger: Ledger, catalog: Catalog
) -> None:
    ledger = any_ledger
    old = seed(ledger, catalog, 12)
    old_results = {r.run_id: r.model_dump() for r in ledger.results(old)}
    job = start(ledger, catalog)
    assert (job.selected, job.recorded, job.pending, job.status) == (12, 0, 12, "running")

    summary = asyncio.run(job_runner(ledger, catalog).run(job.job_id))

    assert summary.status == "done"
    assert (summary.recorded, summary.skipped, summary.pending) == (12, 0, 0)
    assert summary.selected == summary.recorded + summary.skipped + summary.pending
    assert summary.succeeded == 12
    assert summary.in_flight == 0
    new = [row for row in runs_of(ledger) if row.trigger == "rerun"]
    assert len(new) == 12
    assert sorted(row.rerun_of for row in new) == sorted(old)
    assert len({row.conversation_pk for row in new}) == 12
    assert {r.run_id: r.model_dump() for r in ledger.results(old)} == old_results
    spent = sum(ledger.get_run(row.id).cost_usd or 0.0 for row in new)
    assert summary.spent_usd == pytest.approx(spent, abs=1e-5)
    # Running a finished job again records nothing more.
    again = asyncio.run(job_runner(ledger, catalog).run(job.job_id))
    assert again.recorded == 12
    assert len(runs_of(ledger)) == 24


def test_dry_run_counts_and_estimates_from_stored_usage_else_token_counts(
    ledger: Ledger, catalog: Catalog
) -> None:
    for index in range(3):
        ledger.save_conversation(conversation(index))
    fresh = start_rerun_job(
        ledger,
        catalog,
        RerunSelection(analyzer="follow_ups"),
        default_model="claude-sonnet-5-5",
        dry_run=True,
    )
    assert isinstance(fresh, DryRun)
    assert fresh.selected == 3
    assert not fresh.from_stored_usage
    assert fresh.estimated_usd > 0
    assert fresh.estimated_batch_usd == pytest.approx(fresh.estimated_usd / 2, rel=1e-3)

    seed(ledger, catalog, 3)  # the same three conversations, now with runs that cost something
    per_run = ledger.list_runs("succeeded")[0].cost_usd
    stored = start_rerun_job(
        ledger,
        catalog,
        RerunSelection(analyzer="follow_ups"),
        default_model="claude-sonnet-5-5",
        dry_run=True,
    )
    assert isinstance(stored, DryRun)
    assert stored.from_stored_usage
    assert stored.estimated_usd == pytest.approx(3 * (per_run or 0), rel=1e-3)
    with JobLedger(ledger.engine).read() as connection:
        assert (
            connection.execute(sa.select(sa.func.count()).select_from(rerun_job_items)).scalar_one()
            == 0
        )


def test_the_budget_stops_recording_within_one_runs_cost(
    any_ledger: Ledger, catalog: Catalog
) -> None:
    ledger = any_ledger
    seed(ledger, catalog, 10)
    per_run = ledger.list_runs("succeeded")[0].cost_usd or 0.0
    budget = per_run * 4.5
    job = start(ledger, catalog, budget_usd=budget)

    summary = asyncio.run(job_runner(ledger, catalog, concurrency=3).run(job.job_id))

    assert summary.status == "budget_exhausted"
    assert summary.spent_usd <= budget + per_run
    assert summary.recorded == 4  # a fifth would have passed the budget
    assert summary.skipped == 6
    assert summary.pending == 0
    assert summary.selected == summary.recorded + summary.skipped + summary.pending


def test_cancel_stops_a_job_and_a_resume_records_nothing(ledger: Ledger, catalog: Catalog) -> None:
    seed(ledger, catalog, 4)
    job = start(ledger, catalog)
    cancelled = cancel_job(ledger, job.job_id)
    assert (cancelled.status, cancelled.skipped, cancelled.pending) == ("cancelled", 4, 0)
    summary = asyncio.run(job_runner(ledger, catalog).run(job.job_id))
    assert summary.recorded == 0
    assert not [row for row in runs_of(ledger) if row.trigger == "rerun"]
    with pytest.raises(JobNotFound):
        job_summary(ledger, "no-such-job")


def test_a_resume_takes_over_the_dead_runners_runs_and_records_nothing_twice(
    ledger: Ledger, catalog: Catalog, clock: ManualClock
) -> None:
    seed(ledger, catalog, 6)
    job = start(ledger, catalog)

    class Dies(PolicyModel):
        """Hangs every run after the third: the process is 'killed' with runs in flight."""

        async def complete(self, request):  # type: ignore[no-untyped-def]
            if self.calls >= 6:
                await asyncio.Event().wait()
            return await super().complete(request)

    async def killed() -> None:
        runner = job_runner(ledger, catalog, Dies(), concurrency=2, worker_id="gone-host:1:x")
        task = asyncio.create_task(runner.run(job.job_id))
        await asyncio.sleep(1.0)
        task.cancel()

    asyncio.run(killed())
    before = job_summary(ledger, job.job_id)
    assert before.status == "running"
    assert before.in_flight >= 1
    assert before.succeeded == 3

    # The runner's host is not this one: it may be alive, so a resume needs --force.
    with pytest.raises(JobBusy):
        asyncio.run(job_runner(ledger, catalog).run(job.job_id))
    clock.advance(1)
    summary = asyncio.run(job_runner(ledger, catalog, force=True).run(job.job_id))

    assert summary.status == "done"
    assert (summary.recorded, summary.succeeded, summary.pending) == (6, 6, 0)
    new = [row for row in runs_of(ledger) if row.trigger == "rerun"]
    assert len(new) == 6
    assert len({row.conversation_pk for row in new}) == 6


def test_selection_filters(ledger: Ledger, catalog: Catalog) -> None:
    seed(ledger, catalog, 10)
    cases = [
        (RerunSelection(analyzer="follow_ups", tenant="acme"), 5),
        (RerunSelection(analyzer="follow_ups", agent="sales-bot"), 4),
        (RerunSelection(analyzer="follow_ups", outcome="Escalated"), 2),
        (RerunSelection(analyzer="follow_ups", conversations=["c-00001", "c-00002", "nope"]), 2),
        (RerunSelection(analyzer="follow_ups", where='turns.exists(t, t.text.contains("7."))'), 1),
        (RerunSelection(analyzer="follow_ups", failed_only=True), 0),
    ]
    for selection, expected in cases:
        dry = start_rerun_job(
            ledger, catalog, selection, default_model="claude-sonnet-5-5", dry_run=True
        )
        assert isinstance(dry, DryRun)
        assert dry.selected == expected, selection
    with pytest.raises(SelectionError, match="--where"):
        start_rerun_job(
            ledger,
            catalog,
            RerunSelection(analyzer="follow_ups", where="nonsense_variable > 1"),
            default_model="m",
            dry_run=True,
        )


def test_reruns_describe_http_writes_unless_allowed(ledger: Ledger, catalog: Catalog) -> None:
    seed(ledger, catalog, 1)
    job = start(ledger, catalog)
    asyncio.run(job_runner(ledger, catalog).run(job.job_id))
    [rerun] = [row for row in runs_of(ledger) if row.trigger == "rerun"]
    spec_hash = ledger.get_run(rerun.id).spec_hash
    assert spec_hash is not None
    snapshot = ledger.get_snapshot(spec_hash)
    assert snapshot.spec.dry_run
    assert snapshot.spec.sinks == []

    allowed = start(ledger, catalog, allow_writes=True, deliver=True)
    asyncio.run(job_runner(ledger, catalog).run(allowed.job_id))
    with JobLedger(ledger.engine).read() as connection:
        [(_, latest)] = job_runs(connection, allowed.job_id)
    spec = ledger.get_snapshot(ledger.get_run(latest).spec_hash or "").spec
    assert not spec.dry_run
    assert spec.sinks == catalog.analyzers["follow_ups"].sinks
