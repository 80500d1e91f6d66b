"""Leases: claiming a run, keeping it, and letting it go with a result or an error.

Every change here is one conditional UPDATE on the run's row, so concurrent workers cannot both
win: on PostgreSQL the second UPDATE waits for the first's row lock and then re-checks its WHERE
clause against the committed row; on SQLite writers are serialised by BEGIN IMMEDIATE. The run
row says who holds the lease; `run_attempts` keeps one row per claim for the history.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from schemas import AnalysisResult, Conversation
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
from worker.ledger.tables import conversation_versions as versions
from worker.ledger.tables import conversations, run_attempts

ATTEMPTS_EXHAUSTED = "attempts_exhausted"


def claim(
    connection: Connection, now: datetime, run_id: str, worker_id: str, lease_seconds: float
) -> ClaimedRun | None:
    """Take the run if it is claimable and has attempts left; None if it is not for us now.

    A run whose lease ran out on its last attempt is failed `attempts_exhausted` here rather
    than left running forever.
    """
    claimed = take(connection, now, run_id, worker_id, lease_seconds)
    if claimed is None and not fail_exhausted(connection, now, [run_id]):
        load_run(connection, run_id)  # RunNotFound for an id we never issued
    return claimed


def take(
    connection: Connection, now: datetime, run_id: str, worker_id: str, lease_seconds: float
) -> ClaimedRun | None:
    """The claim proper, with the conversation to analyse: the lease, the new attempt row, the
    previous attempt closed if it never reported back. None if the run is not claimable (and
    nothing changed: `claim` says why).

    On PostgreSQL it is one statement (data-modifying CTEs), atomic even outside a transaction,
    so the worker claims in one round trip; on SQLite, where round trips cost nothing, a few.
    """
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
    params = _claim_params(now, run_id, worker_id, lease_seconds)
    if connection.dialect.name == "postgresql":
        row = connection.execute(_CLAIM_AT_ONCE, params).one_or_none()
        if row is None:
            return None
        payload = row.version_payload if row.version_payload is not None else row.payload
        return _claimed(row, run_id, worker_id, payload)
    claimed = connection.execute(_CLAIM_UPDATE, params).one_or_none()
    if claimed is None:
        return None
    if claimed.attempts > 1:  # a previous attempt still open here lost its lease silently
        _close_attempts(
            connection,
            now,
            run_id,
            below=claimed.attempts,
            outcome="expired",
            error_type="lease_expired",
            message=f"{_EXPIRED_PREFIX}{claimed.attempts} went to {worker_id}",
        )
    connection.execute(
        sa.insert(run_attempts).values(
            run_id=run_id, attempt=claimed.attempts, worker_id=worker_id, started_at=now
        )
    )
    if claimed.conversation_version_id is not None:
        payload = connection.execute(
            sa.select(versions.c.payload).where(versions.c.id == claimed.conversation_version_id)
        ).scalar_one_or_none()
    else:
        payload = connection.execute(
            sa.select(conversations.c.payload).where(conversations.c.id == claimed.conversation_pk)
        ).scalar_one_or_none()
    return _claimed(claimed, run_id, worker_id, payload)


_EXPIRED_PREFIX = "lease expired without a result; attempt "


def _claim_params(
    now: datetime, run_id: str, worker_id: str, lease_seconds: float
) -> dict[str, Any]:
    """The values of one claim, for the statements below."""
    return {
        "claim_run_id": run_id,
        "claim_now": now,
        "claim_worker_id": worker_id,
        "claim_lease_expires_at": now + timedelta(seconds=lease_seconds),
        "claim_went_to": f" went to {worker_id}",
    }


# The claim's statements are built once, with bound parameters (`_claim_params`), not per
# claim: building a statement of this size and computing its cache key costs more CPU than
# the round trip it makes.
_NOW = sa.bindparam("claim_now", type_=runs.c.available_at.type)


def _claim_update() -> sa.Update:
    return (
        sa.update(runs)
        .where(
            runs.c.id == sa.bindparam("claim_run_id", type_=runs.c.id.type),
            runs.c.attempts < runs.c.max_attempts,
            # Queued and due, or running under a lease that has run out.
            sa.or_(
                sa.and_(runs.c.status == "queued", runs.c.available_at <= _NOW),
                sa.and_(runs.c.status == "running", runs.c.lease_expires_at <= _NOW),
            ),
        )
        .values(
            status="running",
            lease_owner=sa.bindparam("claim_worker_id", type_=runs.c.lease_owner.type),
            lease_expires_at=sa.bindparam(
                "claim_lease_expires_at", type_=runs.c.lease_expires_at.type
            ),
            attempts=runs.c.attempts + 1,
            started_at=_NOW,
            swept_at=None,
        )
        .returning(
            runs.c.id,
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
    )


def _claim_at_once(update: sa.Update) -> sa.Select[Any]:
    """`update` with the attempt rows and the conversation read, as one PostgreSQL statement.

    The sub-statements see one snapshot: closing the earlier attempts (`attempt < new`) and
    inserting the new one touch different rows, and the conversation rows are not written.
    """
    claimed = update.cte("claimed")
    closed = (
        sa.update(run_attempts)
        .where(
            run_attempts.c.run_id == claimed.c.id,
            run_attempts.c.outcome.is_(None),
            run_attempts.c.attempt < claimed.c.attempts,
        )
        .values(
            outcome="expired",
            finished_at=_NOW,
            error_type="lease_expired",
            error_message=sa.func.concat(
                _EXPIRED_PREFIX,
                claimed.c.attempts,
                sa.bindparam("claim_went_to", type_=run_attempts.c.error_message.type),
            ),
        )
        .cte("closed")
    )
    opened = (
        sa.insert(run_attempts)
        .from_select(
            ["run_id", "attempt", "worker_id", "started_at"],
            sa.select(
                claimed.c.id,
                claimed.c.attempts,
                sa.bindparam("claim_worker_id", type_=run_attempts.c.worker_id.type),
                sa.bindparam("claim_now", type_=run_attempts.c.started_at.type),
            ),
        )
        .cte("opened")
    )
    # The current content is read only for runs recorded before conversation versions.
    current = sa.and_(
        conversations.c.id == claimed.c.conversation_pk,
        claimed.c.conversation_version_id.is_(None),
    )
    return (
        sa.select(
            claimed,
            versions.c.payload.label("version_payload"),
            conversations.c.payload.label("payload"),
        )
        .select_from(
            claimed.outerjoin(
                versions, versions.c.id == claimed.c.conversation_version_id
            ).outerjoin(conversations, current)
        )
        .add_cte(closed, opened)
    )


_CLAIM_UPDATE = _claim_update()
_CLAIM_AT_ONCE = _claim_at_once(_CLAIM_UPDATE)


def _claimed(row: Any, run_id: str, worker_id: str, payload: Any) -> ClaimedRun:
    return ClaimedRun(
        run_id=run_id,
        conversation_pk=row.conversation_pk,
        analyzer=row.analyzer,
        analyzer_version=row.analyzer_version,
        trigger=cast(Trigger, row.trigger),
        attempt=row.attempts,
        max_attempts=row.max_attempts,
        worker_id=worker_id,
        lease_expires_at=row.lease_expires_at,
        rerun_of=row.rerun_of,
        conversation_version_id=row.conversation_version_id,
        spec_hash=row.spec_hash,
        conversation=None if payload is None else Conversation.model_validate(payload),
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


HEARTBEAT_CHUNK = 1000
"""Leases renewed per statement (3 bound values each; far below either database's limit)."""


def renew_leases(
    connection: Connection,
    now: datetime,
    held: Sequence[tuple[str, str, int]],
    lease_seconds: float,
) -> set[str]:
    """Extend every lease in `held` ((run id, worker id, attempt)) that is still held, in one
    statement per `HEARTBEAT_CHUNK`; return the run ids renewed. The others are lost: see
    `note_leases_lost`."""
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
    renewed: set[str] = set()
    for start in range(0, len(held), HEARTBEAT_CHUNK):
        chunk = [tuple(lease) for lease in held[start : start + HEARTBEAT_CHUNK]]
        renewed.update(
            connection.execute(
                sa.update(runs)
                .where(
                    runs.c.status == "running",
                    sa.tuple_(runs.c.id, runs.c.lease_owner, runs.c.attempts).in_(chunk),
                )
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
                .returning(runs.c.id)
            ).scalars()
        )
    return renewed


def note_leases_lost(
    connection: Connection, now: datetime, lost: Sequence[tuple[str, str, int]]
) -> None:
    """Record on each attempt row that its worker's heartbeat found the lease gone."""
    for run_id, worker_id, attempt in lost:
        _note_lease_lost(connection, now, run_id, worker_id, attempt, "heartbeat")


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
    if finished is None:
        return False
    # The outbox and any chained runs commit with the result, or none of them does.
    record_outbox(connection, now, result, spec_hash=finished.spec_hash)
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
    return True


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
    if done is None:
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
    released = _finish(
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
    return released is not None


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
    if finished is None:
        return False
    record_failure_outbox(connection, now, run_id)  # a failure is routable too
    return True


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
) -> Row[Any, Any] | None:
    """Apply `values` and release the lease if it is held; close this claim's attempt row.
    Returns the run's (attempts, spec_hash) as written, or None (lease lost, nothing written).

    With `spent` (tokens, USD) the attempt row records it and the run's figures become the sums
    over its attempts: computed in the same UPDATE, as the other attempts' sums plus this one
    (two statements in all, where the run's row is read once).
    """
    values = {**values, "lease_owner": None, "lease_expires_at": None}
    if values["status"] != "queued":
        values["finished_at"] = now
    params: dict[str, Any] = {
        "finish_run_id": run_id,
        "finish_worker_id": worker_id,
        "finish_attempt": attempt,
        "finish_outcome": outcome,
        "finish_now": now,
        "finish_error_type": error_type,
        "finish_message": message,
    }
    params.update({f"finish_set_{name}": value for name, value in values.items()})
    if spent is not None:
        usage, cost_usd = spent
        params.update({f"finish_spent_{name}": getattr(usage, name) for name in _USAGE_COLUMNS})
        params["finish_spent_cost_usd"] = cost_usd
    statements = _finish_statements(tuple(values), attempt is not None, spent is not None)
    if connection.dialect.name == "postgresql":
        finished = connection.execute(statements.at_once, params).one_or_none()
    else:
        finished = connection.execute(statements.finishing, params).one_or_none()
        if finished is not None:
            params["finish_closed_attempt"] = finished.attempts
            connection.execute(statements.closing, params)
    if finished is None:
        _note_lease_lost(connection, now, run_id, worker_id, attempt, action)
    return finished


_USAGE_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


@dataclass(frozen=True)
class _FinishStatements:
    """One shape of `_finish`, built once with bound parameters (the `finish_*` names)."""

    finishing: sa.Update
    """The run's row: `values` set and the lease released, if it is held."""
    closing: sa.Update
    """The attempt row, once `finishing` said which attempt it was."""
    at_once: sa.Select[Any]
    """Both in one statement (PostgreSQL): the attempt row's update reads the run's new
    attempt number from the CTE. (Its subqueries over run_attempts see the snapshot before
    this statement, which is what `_summed_spend` wants: the other attempts.)"""


@functools.lru_cache(maxsize=64)
def _finish_statements(columns: tuple[str, ...], pinned: bool, spent: bool) -> _FinishStatements:
    """The statements that set `columns` on a run (and, with `spent`, its spend), fenced on the
    lease and, when `pinned`, on the attempt. Built once per shape: building them and computing
    their cache keys per completion cost more CPU than the round trip."""
    held = [
        runs.c.id == sa.bindparam("finish_run_id", type_=runs.c.id.type),
        runs.c.status == "running",
        runs.c.lease_owner == sa.bindparam("finish_worker_id", type_=runs.c.lease_owner.type),
    ]
    if pinned:
        held.append(runs.c.attempts == sa.bindparam("finish_attempt", type_=runs.c.attempts.type))
    sets: dict[str, Any] = {
        name: sa.bindparam(f"finish_set_{name}", type_=runs.c[name].type) for name in columns
    }
    if spent:
        sets |= _summed_spend()
    finishing = (
        sa.update(runs)
        .where(*held)
        .values(sets)
        .returning(runs.c.id, runs.c.attempts, runs.c.spec_hash)
    )
    row = run_attempts.c
    closing_values = {
        "outcome": "finish_outcome",
        "finished_at": "finish_now",
        "error_type": "finish_error_type",
        "error_message": "finish_message",
    }
    update: dict[str, Any] = {
        name: sa.case(
            (row.outcome.is_(None), sa.bindparam(param, type_=row[name].type)), else_=row[name]
        )
        for name, param in closing_values.items()
    }
    if spent:
        update |= {
            name: sa.bindparam(f"finish_spent_{name}", type_=row[name].type)
            for name in (*_USAGE_COLUMNS, "cost_usd")
        }
    closing = (
        sa.update(run_attempts)
        .where(
            row.run_id == sa.bindparam("finish_run_id", type_=row.run_id.type),
            row.attempt == sa.bindparam("finish_closed_attempt", type_=row.attempt.type),
        )
        .values(update)
    )
    finished = finishing.cte("finished")
    closed = (
        sa.update(run_attempts)
        .where(row.run_id == finished.c.id, row.attempt == finished.c.attempts)
        .values(update)
        .cte("closed")
    )
    at_once = sa.select(finished.c.attempts, finished.c.spec_hash).add_cte(closed)
    return _FinishStatements(finishing, closing, at_once)


def _summed_spend() -> dict[str, Any]:
    """The run's spend columns as the sums over its other attempts plus this one's figures
    (the `finish_spent_*` parameters; `runs.attempts` is the attempt being finished: the lease
    fence pins it)."""
    others = sa.and_(run_attempts.c.run_id == runs.c.id, run_attempts.c.attempt != runs.c.attempts)
    return {
        name: sa.func.coalesce(
            sa.select(sa.func.sum(run_attempts.c[name])).where(others).scalar_subquery(), 0
        )
        + sa.bindparam(f"finish_spent_{name}", type_=runs.c[name].type)
        for name in (*_USAGE_COLUMNS, "cost_usd")
    }


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
