"""Leases: claiming a run, keeping it, and letting it go with a result or an error.

Every change here is one conditional UPDATE on the run's row, so concurrent workers cannot both
win: on PostgreSQL the second UPDATE waits for the first's row lock and then re-checks its WHERE
clause against the committed row; on SQLite writers are serialised by BEGIN IMMEDIATE. The run
row says who holds the lease; `run_attempts` keeps one row per claim for the history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemas import AnalysisResult
from schemas.usage import Usage
from worker.ledger._sql import holds_lease, load_run, runs
from worker.ledger.deliveries import record_failure_outbox, record_outbox
from worker.ledger.errors import LedgerError
from worker.ledger.records import (
    AttemptOutcome,
    ClaimedRun,
    RetryOutcome,
    RunPlan,
    Trigger,
)
from worker.ledger.runs import record_runs
from worker.ledger.tables import run_attempts

ATTEMPTS_EXHAUSTED = "attempts_exhausted"


def _claimable(now: datetime) -> sa.ColumnElement[bool]:
    """Queued and due, or running under a lease that has run out."""
    return sa.or_(
        sa.and_(runs.c.status == "queued", runs.c.available_at <= now),
        sa.and_(runs.c.status == "running", runs.c.lease_expires_at <= now),
    )


def claim(
    connection: Connection, now: datetime, run_id: str, worker_id: str, lease_seconds: float
) -> ClaimedRun | None:
    """Take the run if it is claimable and has attempts left; None if it is not for us now.

    A run whose lease ran out on its last attempt is failed `attempts_exhausted` here rather
    than left running forever.
    """
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
    claimed = connection.execute(
        sa.update(runs)
        .where(runs.c.id == run_id, runs.c.attempts < runs.c.max_attempts, _claimable(now))
        .values(
            status="running",
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=runs.c.attempts + 1,
            started_at=now,
            swept_at=None,
        )
        .returning(
            runs.c.conversation_pk,
            runs.c.analyzer,
            runs.c.analyzer_version,
            runs.c.trigger,
            runs.c.attempts,
            runs.c.max_attempts,
            runs.c.lease_expires_at,
            runs.c.rerun_of,
            runs.c.conversation_version_id,
            runs.c.spec_hash,
        )
    ).one_or_none()
    if claimed is None:
        if not fail_exhausted(connection, now, [run_id]):
            load_run(connection, run_id)  # RunNotFound for an id we never issued
        return None
    # A previous attempt still open here lost its lease without reporting back.
    _close_attempts(
        connection,
        now,
        run_id,
        below=claimed.attempts,
        outcome="expired",
        error_type="lease_expired",
        message=f"lease expired without a result; attempt {claimed.attempts} went to {worker_id}",
    )
    connection.execute(
        sa.insert(run_attempts).values(
            run_id=run_id, attempt=claimed.attempts, worker_id=worker_id, started_at=now
        )
    )
    return ClaimedRun(
        run_id=run_id,
        conversation_pk=claimed.conversation_pk,
        analyzer=claimed.analyzer,
        analyzer_version=claimed.analyzer_version,
        trigger=cast(Trigger, claimed.trigger),
        attempt=claimed.attempts,
        max_attempts=claimed.max_attempts,
        worker_id=worker_id,
        lease_expires_at=claimed.lease_expires_at,
        rerun_of=claimed.rerun_of,
        conversation_version_id=claimed.conversation_version_id,
        spec_hash=claimed.spec_hash,
    )


def fail_exhausted(connection: Connection, now: datetime, run_ids: list[str]) -> list[str]:
    """Fail those of `run_ids` whose lease ran out on their last attempt; return their ids."""
    if not run_ids:
        return []
    failed = list(
        connection.execute(
            sa.update(runs)
            .where(
                runs.c.id.in_(run_ids),
                runs.c.status == "running",
                runs.c.lease_expires_at <= now,
                runs.c.attempts >= runs.c.max_attempts,
            )
            .values(
                status="failed",
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
                error_type=ATTEMPTS_EXHAUSTED,
                error_message=(
                    f"{ATTEMPTS_EXHAUSTED}: the lease expired on the last attempt "
                    "without a result (the worker probably died or stalled)"
                ),
                error_retryable=True,
            )
            .returning(runs.c.id)
        ).scalars()
    )
    for run_id in failed:
        record_failure_outbox(connection, now, run_id)
        _close_attempts(
            connection,
            now,
            run_id,
            outcome="expired",
            error_type="lease_expired",
            message=f"lease expired on the last attempt; run failed {ATTEMPTS_EXHAUSTED}",
        )
    return failed


def heartbeat(
    connection: Connection,
    now: datetime,
    run_id: str,
    worker_id: str,
    lease_seconds: float,
    attempt: int | None,
) -> bool:
    """Extend the lease if this worker still holds it; False means stop and write nothing."""
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
    extended = connection.execute(
        sa.update(runs)
        .where(runs.c.id == run_id, holds_lease(worker_id, attempt))
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        .returning(runs.c.id)
    ).one_or_none()
    if extended is None:
        _note_lease_lost(connection, now, run_id, worker_id, attempt, "heartbeat")
        return False
    return True


def complete(
    connection: Connection,
    now: datetime,
    run_id: str,
    worker_id: str,
    result: AnalysisResult,
    attempt: int | None,
    children: Sequence[RunPlan] = (),
) -> bool:
    """Store the result if this worker holds the lease; False (and no change) if it does not.

    The result's usage and cost are this attempt's: they go on its `run_attempts` row, and the
    run's figures become the sums over all of its attempts. `children` (chained analyzers,
    `after:`) are recorded in the same transaction, pointing at this run, on the same
    conversation version; a second completion cannot happen, so neither can a second child.
    """
    if result.run_id != run_id:
        raise LedgerError(f"the result of run {result.run_id!r} was handed in for run {run_id!r}")
    error = result.error
    values = {
        "status": result.status,
        "result": result.model_dump(mode="json"),
        "skip_reason": result.skip_reason,
        "error_type": error.type if error else None,
        "error_message": error.message if error else None,
        "error_retryable": error.retryable if error else None,
    }
    outcome: AttemptOutcome = "failed" if result.status == "failed" else "succeeded"
    finished = _finish(
        connection,
        now,
        run_id,
        worker_id,
        attempt,
        values,
        outcome=outcome,
        error_type=error.type if error else None,
        message=error.message if error else None,
        action="complete",
        spent=(result.usage, result.cost.total_usd),
    )
    if finished:  # the outbox commits with the result, or neither does
        record_outbox(connection, now, result)
        if children:
            run = load_run(connection, run_id)
            record_runs(
                connection,
                now,
                run.conversation_pk,
                children,
                trigger="chain",
                idempotency_prefix=f"chain:{run_id}",
                rerun_of=None,
                conversation_version_id=run.conversation_version_id,
                parent_run_id=run_id,
            )
    return finished


def retry_later(
    connection: Connection,
    now: datetime,
    run_id: str,
    worker_id: str,
    attempt: int | None,
    *,
    error_type: str,
    message: str,
    delay_seconds: float,
    spent: tuple[Usage, float] | None = None,
) -> RetryOutcome:
    """A transient failure: queue the run again after `delay_seconds`, or dead-letter it when
    this was its last attempt. `spent` is what the failed attempt used (tokens, USD)."""
    if delay_seconds < 0:
        raise ValueError(f"delay_seconds must not be negative, got {delay_seconds!r}")
    run = load_run(connection, run_id)
    held = run.status == "running" and run.lease_owner == worker_id
    if not held or (attempt is not None and run.attempts != attempt):
        _note_lease_lost(connection, now, run_id, worker_id, attempt, "retry_later")
        return "lease_lost"
    exhausted = run.attempts >= run.max_attempts
    values: dict[str, Any] = {"status": "queued", "error_retryable": True}
    if exhausted:
        values |= {
            "status": "failed",
            "error_type": ATTEMPTS_EXHAUSTED,
            "error_message": (
                f"{ATTEMPTS_EXHAUSTED}: {error_type}: {message} "
                f"(attempt {run.attempts} of {run.max_attempts})"
            ),
        }
    else:
        values |= {
            "available_at": now + timedelta(seconds=delay_seconds),
            "error_type": error_type,
            "error_message": message,
        }
    done = _finish(
        connection,
        now,
        run_id,
        worker_id,
        run.attempts,  # fences against a takeover between the read above and this write
        values,
        outcome="failed" if exhausted else "retry",
        error_type=error_type,
        message=message,
        action="retry_later",
        spent=spent,
    )
    if not done:
        return "lease_lost"
    if exhausted:
        record_failure_outbox(connection, now, run_id)
    return "failed" if exhausted else "queued"


def release(
    connection: Connection,
    now: datetime,
    run_id: str,
    worker_id: str,
    attempt: int | None,
    *,
    reason: str,
) -> bool:
    """Hand the run back, due now, if this worker holds the lease: its worker is shutting down
    before the analysis finished. Not the run's fault, so the attempt it took is given back to
    its budget (a released last attempt does not dead-letter it)."""
    run = load_run(connection, run_id)
    held = run.status == "running" and run.lease_owner == worker_id
    if not held or (attempt is not None and run.attempts != attempt):
        _note_lease_lost(connection, now, run_id, worker_id, attempt, "release")
        return False
    values: dict[str, Any] = {
        "status": "queued",
        "available_at": now,
        "max_attempts": max(run.max_attempts, run.attempts + 1),
    }
    return _finish(
        connection,
        now,
        run_id,
        worker_id,
        run.attempts,
        values,
        outcome="retry",
        error_type="worker_shutdown",
        message=reason,
        action="release",
    )


def fail(
    connection: Connection,
    now: datetime,
    run_id: str,
    worker_id: str,
    attempt: int | None,
    *,
    error_type: str,
    message: str,
    spent: tuple[Usage, float] | None = None,
) -> bool:
    """A permanent failure: dead-letter the run with its reason, if this worker holds the lease."""
    values = {
        "status": "failed",
        "error_type": error_type,
        "error_message": message,
        "error_retryable": False,
    }
    finished = _finish(
        connection,
        now,
        run_id,
        worker_id,
        attempt,
        values,
        outcome="failed",
        error_type=error_type,
        message=message,
        action="fail",
        spent=spent,
    )
    if finished:  # a failure is routable too (`when: status == "failed"`)
        record_failure_outbox(connection, now, run_id)
    return finished


def _finish(
    connection: Connection,
    now: datetime,
    run_id: str,
    worker_id: str,
    attempt: int | None,
    values: dict[str, Any],
    *,
    outcome: AttemptOutcome,
    error_type: str | None,
    message: str | None,
    action: str,
    spent: tuple[Usage, float] | None = None,
) -> bool:
    """Apply `values` and release the lease if it is held; close this claim's attempt row.

    With `spent` (tokens, USD) the attempt row records it and the run's figures become the sums
    over its attempts.
    """
    values = {**values, "lease_owner": None, "lease_expires_at": None}
    if values["status"] != "queued":
        values["finished_at"] = now
    finished_attempt = connection.execute(
        sa.update(runs)
        .where(runs.c.id == run_id, holds_lease(worker_id, attempt))
        .values(values)
        .returning(runs.c.attempts)
    ).scalar_one_or_none()
    if finished_attempt is None:
        _note_lease_lost(connection, now, run_id, worker_id, attempt, action)
        return False
    _close_attempts(
        connection,
        now,
        run_id,
        attempt=finished_attempt,
        outcome=outcome,
        error_type=error_type,
        message=message,
    )
    if spent is not None:
        _record_spend(connection, run_id, finished_attempt, *spent)
    return True


_USAGE_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


def _record_spend(
    connection: Connection, run_id: str, attempt: int, usage: Usage, cost_usd: float
) -> None:
    """Store what one attempt spent, then set the run's figures to the sums over its attempts."""
    connection.execute(
        sa.update(run_attempts)
        .where(run_attempts.c.run_id == run_id, run_attempts.c.attempt == attempt)
        .values({name: getattr(usage, name) for name in _USAGE_COLUMNS} | {"cost_usd": cost_usd})
    )
    of_this_run = run_attempts.c.run_id == runs.c.id
    connection.execute(
        sa.update(runs)
        .where(runs.c.id == run_id)
        .values(
            {
                name: sa.select(sa.func.sum(run_attempts.c[name]))
                .where(of_this_run)
                .scalar_subquery()
                for name in (*_USAGE_COLUMNS, "cost_usd")
            }
        )
    )


def _close_attempts(
    connection: Connection,
    now: datetime,
    run_id: str,
    *,
    outcome: AttemptOutcome,
    error_type: str | None,
    message: str | None,
    attempt: int | None = None,
    below: int | None = None,
) -> None:
    """Set the outcome of the run's open attempt rows (one, or all before `below`, or all)."""
    query = sa.update(run_attempts).where(
        run_attempts.c.run_id == run_id, run_attempts.c.outcome.is_(None)
    )
    if attempt is not None:
        query = query.where(run_attempts.c.attempt == attempt)
    if below is not None:
        query = query.where(run_attempts.c.attempt < below)
    connection.execute(
        query.values(outcome=outcome, finished_at=now, error_type=error_type, error_message=message)
    )


def _note_lease_lost(
    connection: Connection,
    now: datetime,
    run_id: str,
    worker_id: str,
    attempt: int | None,
    action: str,
) -> None:
    """Record on this worker's attempt row that it reported back too late (the run is untouched).

    Turns `expired` into `lease_lost`: the worker was alive, just slower than its lease, which
    is a different fix at 3 a.m. than a worker that died.
    """
    run = load_run(connection, run_id)  # RunNotFound for an unknown id
    mine = attempt
    if mine is None:
        mine = connection.execute(
            sa.select(sa.func.max(run_attempts.c.attempt)).where(
                run_attempts.c.run_id == run_id, run_attempts.c.worker_id == worker_id
            )
        ).scalar_one_or_none()
    if mine is None:
        return
    now_held_by = (
        f"running attempt {run.attempts} under {run.lease_owner!r}"
        if run.status == "running"
        else run.status
    )
    connection.execute(
        sa.update(run_attempts)
        .where(
            run_attempts.c.run_id == run_id,
            run_attempts.c.worker_id == worker_id,
            run_attempts.c.attempt == mine,
            sa.or_(run_attempts.c.outcome.is_(None), run_attempts.c.outcome == "expired"),
        )
        .values(
            outcome="lease_lost",
            finished_at=sa.func.coalesce(
                run_attempts.c.finished_at, sa.literal(now, run_attempts.c.finished_at.type)
            ),
            error_type="lease_lost",
            error_message=f"{action} refused: the run is now {now_held_by}",
        )
    )
