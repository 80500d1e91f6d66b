"""Rerun jobs in the ledger: the job row, its items (one per selected conversation), and the
runs recorded for them.

The items are fixed when the job is created. An item goes from `pending` to `recorded` (with its
run) or `skipped` (with the reason) in the same transaction that records the run, and only from
`pending`, so a job killed at any moment and resumed records each item's run exactly once; the
run's idempotency key (`job:<job>:<position>`) says the same thing a second time. Whatever the
runs spent is read from the runs themselves, so the figures add up after any crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from analyzers.model.profiles import BATCH_PRICE_FACTOR
from schemas.rerun import JobStatus, JobSummary
from worker.ledger import runs as run_records
from worker.ledger._sql import runs
from worker.ledger.clock import Clock, utc_now
from worker.ledger.engine import read_transaction, write_transaction
from worker.ledger.errors import LedgerError
from worker.ledger.records import RunPlan, RunRecord
from worker.ledger.tables import rerun_job_items, rerun_jobs

items = rerun_job_items
jobs = rerun_jobs


class JobNotFound(LedgerError):
    """No rerun job has this id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no rerun job with id {job_id!r} (see `posthoc jobs list`)")
        self.job_id = job_id


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One rerun job as the ledger holds it."""

    id: str
    analyzer: str
    analyzer_version: str
    selection: dict[str, Any]
    status: JobStatus
    requested_by: str
    budget_usd: float | None
    allow_writes: bool
    deliver: bool
    batch: bool
    estimate_per_run_usd: float
    estimated_usd: float
    selected: int
    runner: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobItem:
    """A selected conversation still waiting for its run."""

    position: int
    conversation_pk: int
    conversation_version_id: int | None


def create_job(
    connection: Connection,
    now: datetime,
    job: JobRecord,
    selected: Sequence[tuple[int, int | None]],
) -> None:
    """Insert the job and one pending item per (conversation pk, version id), in order."""
    values = {name: getattr(job, name) for name in JobRecord.__slots__}
    connection.execute(sa.insert(jobs).values(values | {"created_at": now, "updated_at": now}))
    rows = [
        {
            "job_id": job.id,
            "position": position,
            "conversation_pk": pk,
            "version_id": version_id,
            "state": "pending",
        }
        for position, (pk, version_id) in enumerate(selected)
    ]
    for start in range(0, len(rows), 500):  # bounded statements on any backend
        connection.execute(sa.insert(items), rows[start : start + 500])


def get_job(connection: Connection, job_id: str) -> JobRecord:
    """The job, or JobNotFound."""
    row = connection.execute(sa.select(jobs).where(jobs.c.id == job_id)).one_or_none()
    if row is None:
        raise JobNotFound(job_id)
    return _job_from_row(row._asdict())


def list_jobs(connection: Connection, limit: int) -> list[JobRecord]:
    """Jobs, newest first."""
    query = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
    return [_job_from_row(row._asdict()) for row in connection.execute(query)]


def _job_from_row(values: dict[str, Any]) -> JobRecord:
    values["status"] = cast(JobStatus, values["status"])
    return JobRecord(**values)


def take_over(connection: Connection, now: datetime, job_id: str, runner: str) -> str | None:
    """Make `runner` the job's process; return the previous one. The previous runner's leases
    on this job's runs end now, so the new runner can claim them at once (the caller checked
    that the previous process is gone)."""
    job = get_job(connection, job_id)
    previous = job.runner
    connection.execute(
        sa.update(jobs).where(jobs.c.id == job_id).values(runner=runner, updated_at=now)
    )
    if previous:
        of_job = sa.select(items.c.run_id).where(
            items.c.job_id == job_id, items.c.run_id.is_not(None)
        )
        connection.execute(
            sa.update(runs)
            .where(
                runs.c.id.in_(of_job),
                runs.c.status == "running",
                runs.c.lease_owner.like(f"{_escape_like(previous)}:%", escape="\\"),
            )
            .values(lease_expires_at=now)
        )
    return previous


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def unfinished_runs(connection: Connection, job_id: str) -> list[str]:
    """Runs the job recorded that are queued or running (to process before recording more)."""
    query = (
        sa.select(runs.c.id)
        .join(items, items.c.run_id == runs.c.id)
        .where(items.c.job_id == job_id, runs.c.status.in_(["queued", "running"]))
        .order_by(items.c.position)
    )
    return list(connection.execute(query).scalars())


def pending_items(connection: Connection, job_id: str, limit: int) -> list[JobItem]:
    """The next items without a run, in selection order."""
    query = (
        sa.select(items.c.position, items.c.conversation_pk, items.c.version_id)
        .where(items.c.job_id == job_id, items.c.state == "pending")
        .order_by(items.c.position)
        .limit(limit)
    )
    return [JobItem(*row) for row in connection.execute(query)]


def record_item_run(
    connection: Connection, now: datetime, job_id: str, item: JobItem, plan: RunPlan
) -> RunRecord | None:
    """Record the item's run (queued, or skipped with the plan's reason) and mark the item, in
    one transaction; None when the item is no longer pending (another process recorded it).

    The run points at the analyzer's previous run on the conversation (`rerun_of`), if any.
    """
    previous = connection.execute(
        sa.select(runs.c.id)
        .where(runs.c.conversation_pk == item.conversation_pk, runs.c.analyzer == plan.analyzer)
        .order_by(runs.c.created_at.desc(), runs.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    # The key makes this the item's one run even if the update below finds the item taken.
    (record,) = run_records.record_runs(
        connection,
        now,
        item.conversation_pk,
        [plan],
        trigger="rerun",
        idempotency_prefix=f"job:{job_id}:{item.position}",
        rerun_of=previous,
        conversation_version_id=item.conversation_version_id,
    )
    claimed = connection.execute(
        sa.update(items)
        .where(
            items.c.job_id == job_id,
            items.c.position == item.position,
            items.c.state == "pending",
        )
        .values(
            state="skipped" if plan.skip_reason else "recorded",
            reason=plan.skip_reason,
            run_id=record.id,
        )
    ).rowcount
    return record if claimed == 1 else None


def skip_pending(connection: Connection, job_id: str, reason: str) -> int:
    """Every item still pending becomes skipped with `reason`; returns how many."""
    return connection.execute(
        sa.update(items)
        .where(items.c.job_id == job_id, items.c.state == "pending")
        .values(state="skipped", reason=reason)
    ).rowcount


def set_status(
    connection: Connection, now: datetime, job_id: str, status: JobStatus, *, finished: bool
) -> bool:
    """Move a running job to `status`; False when it was no longer running (cancelled, done)."""
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if finished:
        values["finished_at"] = now
    return (
        connection.execute(
            sa.update(jobs).where(jobs.c.id == job_id, jobs.c.status == "running").values(values)
        ).rowcount
        == 1
    )


@dataclass(frozen=True, slots=True)
class Spend:
    """What the job's runs spent so far, how many are still to finish, and how many finished
    after running (their mean cost is the best estimate of the next run's)."""

    spent_usd: float
    in_flight: int
    finished: int = 0
    finished_usd: float = 0.0


def spend(connection: Connection, job_id: str) -> Spend:
    """The sums over the job's runs (failed attempts' spend included)."""
    ran = runs.c.status.in_(["succeeded", "failed"])
    row = connection.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(runs.c.cost_usd), 0.0),
            sa.func.count().filter(runs.c.status.in_(["queued", "running"])),
            sa.func.count().filter(ran),
            sa.func.coalesce(sa.func.sum(sa.case((ran, runs.c.cost_usd), else_=0.0)), 0.0),
        )
        .select_from(items.join(runs, items.c.run_id == runs.c.id))
        .where(items.c.job_id == job_id)
    ).one()
    return Spend(float(row[0] or 0.0), int(row[1] or 0), int(row[2] or 0), float(row[3] or 0.0))


def summary(connection: Connection, job_id: str) -> JobSummary:
    """The job's figures, counted from its items and runs."""
    job = get_job(connection, job_id)
    states: dict[str, int] = dict(
        connection.execute(
            sa.select(items.c.state, sa.func.count())
            .where(items.c.job_id == job_id)
            .group_by(items.c.state)
        ).all()
    )
    statuses: dict[str, int] = dict(
        connection.execute(
            sa.select(runs.c.status, sa.func.count())
            .select_from(items.join(runs, items.c.run_id == runs.c.id))
            .where(items.c.job_id == job_id, items.c.state == "recorded")
            .group_by(runs.c.status)
        ).all()
    )
    spent = spend(connection, job_id)
    factor = BATCH_PRICE_FACTOR if job.batch else 1.0
    return JobSummary(
        job_id=job.id,
        status=job.status,
        analyzer=job.analyzer,
        analyzer_version=job.analyzer_version,
        selected=job.selected,
        estimated_usd=round(job.estimated_usd * factor, 6),
        estimated_batch_usd=round(job.estimated_usd * BATCH_PRICE_FACTOR, 6),
        recorded=states.get("recorded", 0),
        skipped=states.get("skipped", 0),
        pending=states.get("pending", 0),
        succeeded=statuses.get("succeeded", 0),
        failed=statuses.get("failed", 0),
        in_flight=statuses.get("queued", 0) + statuses.get("running", 0),
        spent_usd=round(spent.spent_usd, 6),
        budget_usd=job.budget_usd,
        batch=job.batch,
        allow_writes=job.allow_writes,
    )


def job_runs(connection: Connection, job_id: str) -> list[tuple[int, str]]:
    """(conversation pk, run id) of every run the job recorded to execute, in order."""
    query = (
        sa.select(items.c.conversation_pk, items.c.run_id)
        .where(items.c.job_id == job_id, items.c.state == "recorded")
        .order_by(items.c.position)
    )
    return [(row[0], row[1]) for row in connection.execute(query)]


class JobLedger:
    """The job operations, each in its own short transaction, on a ledger's engine."""

    def __init__(self, engine: Engine, *, now: Clock = utc_now) -> None:
        self.engine = engine
        self._clock = now

    def now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def write(self) -> AbstractContextManager[Connection]:
        return write_transaction(self.engine)

    def read(self) -> AbstractContextManager[Connection]:
        return read_transaction(self.engine)
