"""Recording analysis runs, reading them back, and sending failed ones round again."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemas import AnalysisResult
from worker.ledger._sql import RUN_COLUMNS, load_run, run_from_row, runs, upsert_insert
from worker.ledger.conversations import (
    check_version_belongs,
    conversation_identity,
    current_version_id,
)
from worker.ledger.errors import InvalidTransition, LedgerError, RunNotFound
from worker.ledger.records import (
    RUN_STATES,
    TRIGGERS,
    AttemptOutcome,
    AttemptRecord,
    RunPlan,
    RunRecord,
    RunState,
    Trigger,
)
from worker.ledger.snapshots import save_snapshot
from worker.ledger.tables import run_attempts


def record_runs(
    connection: Connection,
    now: datetime,
    conversation_pk: int,
    plans: Sequence[RunPlan],
    *,
    trigger: Trigger,
    idempotency_prefix: str | None,
    rerun_of: str | None,
    conversation_version_id: int | None = None,
    parent_run_id: str | None = None,
) -> list[RunRecord]:
    """One run per plan: queued and available now, or skipped with its reason.

    Each run points at `conversation_version_id` (by default the conversation's current
    version) and at its plan's snapshot, which is stored here unless stored already.

    With an idempotency prefix, a plan whose key `{prefix}:{analyzer}` was recorded before
    returns that run (`created=False`) instead of a new one; when one call plans several
    versions of an analyzer, their keys are `{prefix}:{analyzer}@{version}`. The insert does
    nothing on a key conflict, so two concurrent submissions still create one run.
    """
    if trigger not in TRIGGERS:
        raise LedgerError(f"unknown trigger {trigger!r}; expected one of {list(TRIGGERS)}")
    tenant_id, conversation_id = conversation_identity(connection, conversation_pk)
    if conversation_version_id is None:
        conversation_version_id = current_version_id(connection, conversation_pk)
    else:
        check_version_belongs(connection, conversation_pk, conversation_version_id)
    if rerun_of is not None:
        load_run(connection, rerun_of)  # RunNotFound rather than a foreign-key error
    analyzers = [plan.analyzer for plan in plans]
    versioned = [f"{plan.analyzer}@{plan.analyzer_version}" for plan in plans]
    repeated = sorted({name for name in versioned if versioned.count(name) > 1})
    if idempotency_prefix is not None and repeated:
        raise LedgerError(
            f"analyzer(s) {repeated} planned twice under idempotency prefix "
            f"{idempotency_prefix!r}: each would get the same key"
        )
    records = []
    for plan in plans:
        run_id = uuid.uuid4().hex
        key_name = (
            f"{plan.analyzer}@{plan.analyzer_version}"
            if analyzers.count(plan.analyzer) > 1
            else plan.analyzer
        )
        spec_hash = None if plan.snapshot is None else save_snapshot(connection, now, plan.snapshot)
        values: dict[str, Any] = {
            "id": run_id,
            "conversation_pk": conversation_pk,
            "analyzer": plan.analyzer,
            "analyzer_version": plan.analyzer_version,
            "trigger": trigger,
            "attempts": 0,
            "max_attempts": plan.max_attempts,
            "attempt_budget": plan.max_attempts,
            "available_at": now,
            "created_at": now,
            "rerun_of": rerun_of,
            "parent_run_id": parent_run_id,
            "conversation_version_id": conversation_version_id,
            "spec_hash": spec_hash,
            "idempotency_key": (
                None if idempotency_prefix is None else f"{idempotency_prefix}:{key_name}"
            ),
        }
        if plan.skip_reason is None:
            values["status"] = "queued"
            if plan.settle_seconds > 0:
                values["available_at"] = now + timedelta(seconds=plan.settle_seconds)
        else:
            skipped = AnalysisResult(
                run_id=run_id,
                conversation_id=conversation_id,
                tenant_id=tenant_id,
                analyzer=plan.analyzer,
                analyzer_version=plan.analyzer_version,
                status="skipped",
                skip_reason=plan.skip_reason,
            )
            values |= {
                "status": "skipped",
                "skip_reason": plan.skip_reason,
                "finished_at": now,
                "result": skipped.model_dump(mode="json"),
            }
        record = _insert_run(connection, conversation_pk, values)
        if record.created and plan.settle_seconds > 0 and record.status == "queued":
            supersede_settling(connection, now, record, tenant_id, conversation_id)
        records.append(record)
    return records


def supersede_settling(
    connection: Connection, now: datetime, newer: RunRecord, tenant_id: str, conversation_id: str
) -> list[str]:
    """Skip the runs of the same analyzer on an earlier version of the conversation that still
    wait out their settle delay (queued, never claimed, not due yet): `newer` replaces them.

    In the transaction that records `newer`, so one of them always remains to run.
    """
    waiting = connection.execute(
        sa.select(runs.c.id, runs.c.analyzer_version)
        .where(
            runs.c.conversation_pk == newer.conversation_pk,
            runs.c.analyzer == newer.analyzer,
            runs.c.analyzer_version == newer.analyzer_version,
            runs.c.id != newer.id,
            runs.c.status == "queued",
            runs.c.attempts == 0,
            runs.c.available_at > now,
            runs.c.conversation_version_id != newer.conversation_version_id,
        )
        .with_for_update()
    ).all()
    reason = (
        f"superseded: a newer version of the conversation arrived within the settle window "
        f"(run {newer.id})"
    )
    for row in waiting:
        skipped = AnalysisResult(
            run_id=row.id,
            conversation_id=conversation_id,
            tenant_id=tenant_id,
            analyzer=newer.analyzer,
            analyzer_version=row.analyzer_version,
            status="skipped",
            skip_reason=reason,
        )
        connection.execute(
            sa.update(runs)
            .where(runs.c.id == row.id, runs.c.status == "queued", runs.c.attempts == 0)
            .values(
                status="skipped",
                skip_reason=reason,
                finished_at=now,
                result=skipped.model_dump(mode="json"),
            )
        )
    return [row.id for row in waiting]


def _insert_run(connection: Connection, conversation_pk: int, values: dict[str, Any]) -> RunRecord:
    key = values["idempotency_key"]
    if key is None:
        row = connection.execute(sa.insert(runs).values(values).returning(*RUN_COLUMNS)).one()
        return run_from_row(row, created=True)
    inserted = connection.execute(
        upsert_insert(connection, runs)
        .values(values)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(*RUN_COLUMNS)
    ).one_or_none()
    if inserted is not None:
        return run_from_row(inserted, created=True)
    existing = connection.execute(
        sa.select(*RUN_COLUMNS).where(runs.c.idempotency_key == key)
    ).one()
    if existing.conversation_pk != conversation_pk:
        raise LedgerError(
            f"idempotency key {key!r} already belongs to run {existing.id!r} of conversation "
            f"pk {existing.conversation_pk}, not conversation pk {conversation_pk}"
        )
    return run_from_row(existing, created=False)


def list_runs(
    connection: Connection,
    *,
    status: RunState | None,
    analyzer: str | None,
    conversation_pk: int | None,
    limit: int,
) -> list[RunRecord]:
    """Runs, newest first, optionally filtered."""
    query = sa.select(*RUN_COLUMNS).order_by(runs.c.created_at.desc(), runs.c.id).limit(limit)
    if status is not None:
        query = query.where(runs.c.status == status)
    if analyzer is not None:
        query = query.where(runs.c.analyzer == analyzer)
    if conversation_pk is not None:
        query = query.where(runs.c.conversation_pk == conversation_pk)
    return [run_from_row(row) for row in connection.execute(query)]


def child_runs(connection: Connection, parent_run_id: str) -> list[RunRecord]:
    """The runs chained after this one (`after:`), by analyzer."""
    query = (
        sa.select(*RUN_COLUMNS)
        .where(runs.c.parent_run_id == parent_run_id)
        .order_by(runs.c.analyzer, runs.c.id)
    )
    return [run_from_row(row) for row in connection.execute(query)]


def counts_by_analyzer(
    connection: Connection, *, analyzer: str | None
) -> dict[str, dict[RunState, int]]:
    """{analyzer: {status: count}} with every status present (zeros included)."""
    query = sa.select(runs.c.analyzer, runs.c.status, sa.func.count()).group_by(
        runs.c.analyzer, runs.c.status
    )
    if analyzer is not None:
        query = query.where(runs.c.analyzer == analyzer)
    counts: dict[str, dict[RunState, int]] = {}
    for name, status, count in connection.execute(query):
        per_status = counts.setdefault(name, dict.fromkeys(RUN_STATES, 0))
        per_status[cast(RunState, status)] = count
    return counts


def results(connection: Connection, run_ids: Sequence[str]) -> list[AnalysisResult]:
    """The stored results of these runs, in the order given; runs without one yet are left out."""
    if not run_ids:
        return []
    found = {
        row.id: row.result
        for row in connection.execute(
            sa.select(runs.c.id, runs.c.result).where(runs.c.id.in_(list(run_ids)))
        )
    }
    for run_id in run_ids:
        if run_id not in found:
            raise RunNotFound(run_id)
    return [
        AnalysisResult.model_validate(found[run_id])
        for run_id in run_ids
        if found[run_id] is not None
    ]


def attempts(connection: Connection, run_id: str) -> list[AttemptRecord]:
    """Every claim of the run, first first."""
    load_run(connection, run_id)
    rows = connection.execute(
        sa.select(run_attempts)
        .where(run_attempts.c.run_id == run_id)
        .order_by(run_attempts.c.attempt)
    )
    return [
        AttemptRecord(
            run_id=row.run_id,
            attempt=row.attempt,
            worker_id=row.worker_id,
            started_at=row.started_at,
            finished_at=row.finished_at,
            outcome=cast(AttemptOutcome | None, row.outcome),
            error_type=row.error_type,
            error_message=row.error_message,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cache_read_input_tokens=row.cache_read_input_tokens,
            cache_creation_input_tokens=row.cache_creation_input_tokens,
            cost_usd=row.cost_usd,
        )
        for row in rows
    ]


def requeue_failed(
    connection: Connection, now: datetime, run_ids: Sequence[str] | None
) -> list[str]:
    """Failed runs back to queued, available now, with a fresh budget of attempts.

    `None` means every failed run. Named runs are checked first: one that does not exist or is
    not failed refuses the whole call, and nothing is changed.
    """
    requeued = sa.update(runs).values({**_FRESH_QUEUE_ENTRY, "available_at": now})
    if run_ids is None:
        failed = requeued.where(runs.c.status == "failed").returning(runs.c.id)
        return list(connection.execute(failed).scalars())
    ids = list(dict.fromkeys(run_ids))
    query = sa.select(runs.c.id, runs.c.status).where(runs.c.id.in_(ids))
    statuses = {row.id: row.status for row in connection.execute(query)}
    for run_id in ids:
        if run_id not in statuses:
            raise RunNotFound(run_id)
        if statuses[run_id] != "failed":
            raise InvalidTransition(run_id, statuses[run_id], "retry", "failed runs can be retried")
    if ids:
        connection.execute(requeued.where(runs.c.id.in_(ids), runs.c.status == "failed"))
    return ids


# What a retried run starts from: queued, a fresh attempt budget, nothing left of its last try
# (its history stays in run_attempts). Its spend figures stay: they are the sums over all of
# its attempts, the earlier ones included.
_FRESH_QUEUE_ENTRY: dict[str, Any] = {
    "status": "queued",
    "max_attempts": runs.c.attempts + runs.c.attempt_budget,
    **dict.fromkeys(
        [
            "lease_owner",
            "lease_expires_at",
            "swept_at",
            "started_at",
            "finished_at",
            "error_type",
            "error_message",
            "error_retryable",
            "result",
        ]
    ),
}
