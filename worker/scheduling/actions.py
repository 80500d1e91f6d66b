"""What a schedule's firing does: record a standalone run, or start a rerun job, for one slot.

Both are idempotent by (schedule, slot), as the beat requires: the standalone run is recorded
under its selection record's id, and a rerun job is started with `requested_by` =
`schedule:<name>:<slot>`; a job with that tag found in the ledger is taken instead of a second
one (a beat that died between starting the job and recording the firing).
Windows are relative to the slot, never to when the firing happens to run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from analyzers.definitions.versions import parse_selector
from analyzers.errors import ConfigError
from schemas.rerun import JobSummary, RerunSelection
from schemas.schedule import RerunAction, ScheduleSpec, StandaloneAction
from worker.catalog import Catalog
from worker.engine.results_reader import ResultsSelection
from worker.ledger import Ledger
from worker.ledger.schedules import ScheduleLedger
from worker.scheduling.rerun import start_rerun_job
from worker.scheduling.standalone import record_standalone_run

Enqueue = Callable[[Sequence[str]], None]
StartRerun = Callable[[ScheduleSpec, RerunAction, datetime], dict[str, Any]]


def results_selection(
    spec: ScheduleSpec, action: StandaloneAction, slot: datetime
) -> ResultsSelection:
    """The stored results a standalone firing for `slot` works over."""
    return ResultsSelection(
        tenant=action.tenant,
        since=slot - action.since.as_timedelta(),
        until=slot - action.until.as_timedelta(),
        schedule=spec.name,
        scheduled_for=slot,
    )


class ScheduleActions:
    """The beat's `FireAction`: does a firing's action on this ledger and broker."""

    def __init__(
        self,
        ledger: Ledger,
        catalog: Catalog,
        *,
        enqueue: Enqueue,
        max_attempts: int,
        start_rerun: StartRerun | None = None,
    ) -> None:
        self.ledger = ledger
        self.catalog = catalog
        self.enqueue = enqueue
        self.max_attempts = max_attempts
        self.start_rerun = start_rerun

    def __call__(self, spec: ScheduleSpec, slot: datetime) -> dict[str, Any]:
        if spec.standalone is not None:
            return self._standalone(spec, spec.standalone, slot)
        assert spec.rerun is not None  # noqa: S101 - the schema guarantees one action
        if self.start_rerun is None:
            raise ConfigError(f"schedule {spec.name!r}: rerun jobs are not available here")
        return self.start_rerun(spec, spec.rerun, slot)

    def _standalone(
        self, spec: ScheduleSpec, action: StandaloneAction, slot: datetime
    ) -> dict[str, Any]:
        selection = results_selection(spec, action, slot)
        run = record_standalone_run(
            self.ledger, self.catalog, action.analyzer, selection, max_attempts=self.max_attempts
        )
        if run.status == "queued":
            # Also when the run was recorded by an earlier attempt at this firing: its message
            # may never have been sent, and a duplicate message is a no-op for the worker.
            self.enqueue([run.id])
        return {"run_id": run.id, "created": run.created}


def schedule_catalog_problems(schedules: Sequence[ScheduleSpec], catalog: Catalog) -> list[str]:
    """Schedules whose analyzer is not loaded in `catalog` or is the wrong kind (one line each,
    naming the schedule and the field)."""
    problems = []
    for spec in schedules:
        where = "standalone" if spec.standalone is not None else "rerun"
        wanted = "results" if spec.standalone is not None else "conversation"
        found = catalog.get(*parse_selector(spec.action.analyzer))
        if found is None:
            problems.append(
                f"schedule {spec.name!r}: {where}.analyzer: {spec.action.analyzer!r} is not "
                f"loaded (known: {sorted(catalog.versions)})"
            )
        elif found.input != wanted:
            problems.append(
                f"schedule {spec.name!r}: {where}.analyzer: {spec.action.analyzer!r} has "
                f"input: {found.input}; a {where} action needs input: {wanted}"
            )
    return problems


def rerun_starter(
    ledger: Ledger,
    catalog: Catalog,
    *,
    default_model: str,
    execute: Callable[[str], object] | None = None,
) -> StartRerun:
    """Starts a schedule's rerun job (`start_rerun_job`, as `posthoc rerun` does) once per
    (schedule, slot), and hands its id to `execute` (the beat runs it; without `execute`, it
    waits for `posthoc rerun --resume JOB`)."""
    store = ScheduleLedger(ledger.engine, now=ledger.clock)

    def start(spec: ScheduleSpec, action: RerunAction, slot: datetime) -> dict[str, Any]:
        tag = f"schedule:{spec.name}:{slot.isoformat()}"
        job_id = store.rerun_job_requested_by(tag)
        created = job_id is None
        if job_id is None:
            name, version = parse_selector(action.analyzer)
            selection = RerunSelection(
                analyzer=name,
                version=version,
                since=slot - action.since.as_timedelta(),
                until=slot - action.until.as_timedelta(),
                tenant=action.tenant,
                agent=action.agent,
                outcome=action.outcome,
                where=action.where,
                failed_only=action.failed_only,
            )
            summary = start_rerun_job(
                ledger,
                catalog,
                selection,
                default_model=default_model,
                budget_usd=action.budget_usd,
                allow_writes=action.allow_writes,
                deliver=action.deliver,
                requested_by=tag,
            )
            assert isinstance(summary, JobSummary)  # noqa: S101 - not a dry run
            job_id = summary.job_id
        if execute is not None:
            execute(job_id)
        return {"job_id": job_id, "created": created}

    return start
