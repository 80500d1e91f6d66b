"""Writing a batch of webhook deliveries in one transaction: claims, conversations, runs, log.

Each delivery that maps to a conversation first claims its event identity by inserting its
accepted row in the delivery log; the partial unique index on (source, event id) of accepted
rows makes a claim already taken (by an earlier batch, or a concurrent one in another process,
which PostgreSQL waits for) a conflict: that delivery is a duplicate and answers 200 with the
runs of the first. Two deliveries of one event in the same batch: the first claims, the second
answers 200 with the first's runs. Claimed deliveries are recorded together (`record_many`) and
their rows completed with the run ids. Deliveries that record nothing (rejected, ignored) only
add their log row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.ledger import Ledger
from worker.ledger.bulk import KnownSnapshots, RunsToRecord, record_many
from worker.ledger.many_rows import insert_rows
from worker.ledger.tables import webhook_deliveries

deliveries = webhook_deliveries
ACCEPTED = "accepted"
DUPLICATE = "duplicate"
EVENT_ID_CHARS = 500  # the column's width


@dataclass(frozen=True)
class LogEntry:
    """One row of the delivery log: what arrived and what was answered, never the body."""

    received_at: datetime
    source: str
    tenant_id: str | None
    event_type: str | None
    event_id: str | None
    signature: str
    status_code: int
    outcome: str
    detail: str | None = None
    run_ids: list[str] = field(default_factory=list)

    def row(self) -> dict[str, object]:
        return {
            "received_at": self.received_at,
            "source": self.source,
            "tenant_id": self.tenant_id,
            "event_type": None if self.event_type is None else self.event_type[:200],
            "event_id": None if self.event_id is None else self.event_id[:EVENT_ID_CHARS],
            "signature": self.signature,
            "status_code": self.status_code,
            "outcome": self.outcome,
            "detail": None if self.detail is None else self.detail[:2000],
            "run_ids": self.run_ids,
        }


@dataclass(frozen=True)
class Accept:
    """A verified delivery that maps to a conversation: record its runs unless its event was
    accepted before. `log` is its accepted row (status and run ids are filled in here)."""

    log: LogEntry
    runs: RunsToRecord
    trace: dict[str, str] = field(default_factory=dict)
    """The request's trace context, for the messages of its runs (empty: tracing off)."""


@dataclass(frozen=True)
class LogOnly:
    """A delivery answered without recording anything: only its log row is written."""

    log: LogEntry


@dataclass(frozen=True)
class Answer:
    """What to answer a delivery, and the runs to send to the broker once committed."""

    status: int
    run_ids: list[str]
    to_send: list[str] = field(default_factory=list)
    trace: dict[str, str] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return ACCEPTED if self.status == 202 else DUPLICATE


Delivery = Accept | LogOnly


class DeliveryWriter:
    """`write` for `GroupCommit`: a batch of deliveries in one open transaction."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._snapshots = KnownSnapshots()

    def __call__(self, connection: Connection, items: Sequence[Delivery]) -> list[Answer]:
        try:
            return self._write(connection, items)
        except Exception:
            self._snapshots.forget()  # the batch rolls back: learn again from the database
            raise

    def _write(self, connection: Connection, items: Sequence[Delivery]) -> list[Answer]:
        answers: dict[int, Answer] = {}
        logs: list[LogEntry] = []
        claimants: dict[tuple[str, str], tuple[int, Accept]] = {}
        followers: list[tuple[int, Accept, int]] = []
        for index, item in enumerate(items):
            if isinstance(item, LogOnly):
                answers[index] = Answer(item.log.status_code, list(item.log.run_ids))
                logs.append(item.log)
            elif _event(item) in claimants:
                followers.append((index, item, claimants[_event(item)][0]))
            else:
                claimants[_event(item)] = (index, item)
        claimed = _claim(connection, [item for _, item in claimants.values()])
        taken = [(index, item) for key, (index, item) in claimants.items() if key not in claimed]
        earlier = _accepted_runs(connection, [_event(item) for _, item in taken])
        for index, item in taken:
            answers[index] = Answer(200, earlier.get(_event(item), []))
            logs.append(_as_duplicate(item.log, answers[index]))
        mine = [(index, item) for key, (index, item) in claimants.items() if key in claimed]
        recorded = record_many(
            connection,
            self._ledger.now(),
            [item.runs for _, item in mine],
            mark_sent=True,
            known_snapshots=self._snapshots,
        )
        updates = []
        for (index, item), done in zip(mine, recorded, strict=True):
            ids = [run.id for run in done.runs]
            repeated = bool(done.runs) and not any(run.created for run in done.runs)
            answers[index] = Answer(200 if repeated else 202, ids, done.to_send, item.trace)
            updates.append(
                {
                    "row_id": claimed[_event(item)],
                    "new_run_ids": ids,
                    "new_status": answers[index].status,
                    "new_outcome": answers[index].outcome,
                }
            )
        if updates:
            connection.execute(
                sa.update(deliveries)
                .where(deliveries.c.id == sa.bindparam("row_id"))
                .values(
                    run_ids=sa.bindparam("new_run_ids", type_=deliveries.c.run_ids.type),
                    status_code=sa.bindparam("new_status"),
                    outcome=sa.bindparam("new_outcome"),
                ),
                updates,
            )
        for index, item, first in followers:
            answers[index] = Answer(200, answers[first].run_ids)
            logs.append(_as_duplicate(item.log, answers[index]))
        if logs:
            insert_rows(connection, deliveries, [entry.row() for entry in logs])
        return [answers[index] for index in range(len(items))]


def _event(item: Accept) -> tuple[str, str]:
    """The event identity a delivery claims."""
    return item.log.source, (item.log.event_id or "")[:EVENT_ID_CHARS]


def _claim(connection: Connection, accepts: Sequence[Accept]) -> dict[tuple[str, str], int]:
    """Insert the accepted rows of these deliveries (one per event); {event: row id} of the
    claims that held (the others were accepted before)."""
    if not accepts:
        return {}
    inserted = insert_rows(
        connection,
        deliveries,
        [
            {**item.log.row(), "status_code": 202, "outcome": ACCEPTED, "run_ids": None}
            for item in accepts
        ],
        skip_conflicts_on=["source", "event_id"],
        # Literal, as the index is written: PostgreSQL infers the partial index from it.
        conflict_where=f"outcome = '{ACCEPTED}'",
        returning=(deliveries.c.id, deliveries.c.source, deliveries.c.event_id),
    )
    return {(row.source, row.event_id): int(row.id) for row in inserted}


def _as_duplicate(entry: LogEntry, answer: Answer) -> LogEntry:
    return replace(entry, status_code=answer.status, outcome=DUPLICATE, run_ids=answer.run_ids)


def _accepted_runs(
    connection: Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[str]]:
    """The run ids of the accepted deliveries of these events."""
    if not keys:
        return {}
    wanted = set(keys)
    rows = connection.execute(
        sa.select(deliveries.c.source, deliveries.c.event_id, deliveries.c.run_ids).where(
            deliveries.c.outcome == ACCEPTED,
            deliveries.c.source.in_(sorted({source for source, _ in keys})),
            deliveries.c.event_id.in_(sorted({event for _, event in keys})),
        )
    )
    return {
        (row.source, row.event_id): list(row.run_ids or [])
        for row in rows
        if (row.source, row.event_id) in wanted
    }
