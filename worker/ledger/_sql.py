"""Small SQL building blocks shared by the ledger's modules."""

from __future__ import annotations

from enum import Enum
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from worker.ledger.errors import LedgerError, RunNotFound
from worker.ledger.records import RunRecord, RunState, Trigger
from worker.ledger.tables import analysis_runs

runs = analysis_runs


class Unknown(Enum):
    """A value the caller has not read (so the callee must), distinct from a read None."""

    NOT_READ = "not read"


UNKNOWN = Unknown.NOT_READ

RUN_COLUMNS = [column for column in runs.c if column.name != "result"]
"""Every run column but the (possibly large) result."""


def upsert_insert(connection: Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ON CONFLICT DO NOTHING on this connection's database."""
    name = connection.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise LedgerError(f"the ledger supports sqlite and postgresql, not {name!r}")


def holds_lease(worker_id: str, attempt: int | None) -> sa.ColumnElement[bool]:
    """The run is running under this worker's lease (and this claim's, given `attempt`).

    A lease that ran out but that nobody has taken over yet still counts: the work is done and
    nobody else is doing it. Taking over and finishing are both conditional updates of the same
    row, so whichever commits first wins and the other matches nothing.
    """
    condition = sa.and_(runs.c.status == "running", runs.c.lease_owner == worker_id)
    if attempt is not None:
        condition = sa.and_(condition, runs.c.attempts == attempt)
    return condition


def run_from_row(row: Row[Any], *, created: bool = False) -> RunRecord:
    """A RunRecord from a row selected with RUN_COLUMNS."""
    values = row._asdict()
    return RunRecord(
        id=values["id"],
        conversation_pk=values["conversation_pk"],
        analyzer=values["analyzer"],
        analyzer_version=values["analyzer_version"],
        status=cast(RunState, values["status"]),
        trigger=cast(Trigger, values["trigger"]),
        attempts=values["attempts"],
        max_attempts=values["max_attempts"],
        attempt_budget=values["attempt_budget"],
        available_at=values["available_at"],
        created_at=values["created_at"],
        skip_reason=values["skip_reason"],
        idempotency_key=values["idempotency_key"],
        lease_owner=values["lease_owner"],
        lease_expires_at=values["lease_expires_at"],
        started_at=values["started_at"],
        finished_at=values["finished_at"],
        error_type=values["error_type"],
        error_message=values["error_message"],
        error_retryable=values["error_retryable"],
        cost_usd=values["cost_usd"],
        input_tokens=values["input_tokens"],
        output_tokens=values["output_tokens"],
        cache_read_input_tokens=values["cache_read_input_tokens"],
        cache_creation_input_tokens=values["cache_creation_input_tokens"],
        rerun_of=values["rerun_of"],
        conversation_version_id=values["conversation_version_id"],
        spec_hash=values["spec_hash"],
        created=created,
    )


def load_run(connection: Connection, run_id: str) -> RunRecord:
    """The run with this id, or RunNotFound."""
    row = connection.execute(sa.select(*RUN_COLUMNS).where(runs.c.id == run_id)).one_or_none()
    if row is None:
        raise RunNotFound(run_id)
    return run_from_row(row)
