"""Recording many conversations and their runs in one transaction, with multi-row statements.

What `save_conversation` and `record_runs` do one conversation at a time (about nine statements
each), done for a whole batch in a handful: one INSERT for the new conversations, one for their
first versions, one for the snapshots, one for the runs (`insert_rows`: on PostgreSQL, one
statement text whatever the batch size). The rules are the same: a conversation already stored
(or seen earlier in the batch) goes through `save_conversation`, which locks its row while it
picks a version; a run whose idempotency key exists returns that run with `created=False`. The
caller owns the transaction: a batch commits whole or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemas import AnalysisResult, AnalyzerSnapshot, Conversation
from worker.ledger._sql import RUN_COLUMNS, run_from_row, runs
from worker.ledger.conversations import save_conversation
from worker.ledger.errors import LedgerError
from worker.ledger.many_rows import insert_rows
from worker.ledger.records import TRIGGERS, ConversationRef, RunPlan, RunRecord, Trigger
from worker.ledger.tables import analyzer_snapshots, conversation_versions, conversations


@dataclass(frozen=True)
class RunsToRecord:
    """One conversation to store and the runs to record for it (see `Ledger.record_runs`).

    `idempotent`: the same conversation content recorded again (same trigger) returns the runs
    recorded the first time instead of new ones.
    """

    conversation: Conversation
    plans: Sequence[RunPlan]
    trigger: Trigger
    idempotent: bool = True


@dataclass(frozen=True)
class Recorded:
    """What recording one `RunsToRecord` gave: the stored conversation and its runs, in the
    order of its plans (`RunRecord.created` False for a run recorded before)."""

    conversation: ConversationRef
    runs: list[RunRecord]

    @property
    def to_send(self) -> list[str]:
        """Ids of the runs created queued: those whose message must go to the broker."""
        return [run.id for run in self.runs if run.created and run.status == "queued"]


def record_many(
    connection: Connection,
    now: datetime,
    entries: Sequence[RunsToRecord],
    *,
    mark_sent: bool,
    known_snapshots: KnownSnapshots | None = None,
) -> list[Recorded]:
    """Store every conversation and record its runs, in `entries` order.

    `known_snapshots`: the caller's `KnownSnapshots`, kept across its batches (it must
    `forget()` when a batch fails).

    `mark_sent`: the caller sends the created queued runs to the broker right after the commit,
    so record them as sent now (`enqueued_at`, `enqueue_count` 1), as `Ledger.mark_enqueued`
    would just before sending; a send that then fails leaves runs the sweeper sends again.
    """
    refs = save_conversations(connection, now, [entry.conversation for entry in entries])
    hashes = _save_snapshots(connection, now, entries, known_snapshots)
    rows: list[dict[str, Any]] = []
    for entry, ref in zip(entries, refs, strict=True):
        rows += _run_rows(entry, ref, now, hashes, mark_sent=mark_sent)
    stored = _insert_runs(connection, rows)
    recorded = []
    start = 0
    for entry, ref in zip(entries, refs, strict=True):
        own = stored[start : start + len(entry.plans)]
        start += len(entry.plans)
        recorded.append(Recorded(ref, own))
    return recorded


def save_conversations(
    connection: Connection, now: datetime, items: Sequence[Conversation]
) -> list[ConversationRef]:
    """`save_conversation` for each item, in order: new conversations with two statements for
    the batch, the rest (stored before, or repeated in the batch) one at a time."""
    prepared = [(item, item.model_dump(mode="json"), item.content_hash()) for item in items]
    first: dict[tuple[str, str], int] = {}
    for index, (item, _, _) in enumerate(prepared):
        first.setdefault((item.tenant_id, item.conversation_id), index)
    refs: dict[int, ConversationRef] = {}
    if first:
        inserted = insert_rows(
            connection,
            conversations,
            [
                {
                    "tenant_id": prepared[i][0].tenant_id,
                    "conversation_id": prepared[i][0].conversation_id,
                    "payload": prepared[i][1],
                    "transcript_hash": prepared[i][2],
                    "received_at": now,
                    "updated_at": now,
                }
                for i in first.values()
            ],
            skip_conflicts_on=["tenant_id", "conversation_id"],
            returning=(
                conversations.c.id,
                conversations.c.tenant_id,
                conversations.c.conversation_id,
            ),
        )
        created = {(row.tenant_id, row.conversation_id): int(row.id) for row in inserted}
        new = [(first[key], pk) for key, pk in created.items()]
        versions = _first_versions(connection, now, [(pk, *prepared[i][1:]) for i, pk in new])
        for index, pk in new:
            item, _, digest = prepared[index]
            refs[index] = ConversationRef(
                pk=pk,
                tenant_id=item.tenant_id,
                conversation_id=item.conversation_id,
                transcript_hash=digest,
                created=True,
                changed=True,
                version_id=versions[pk],
                version=1,
            )
    for index, (item, _, _) in enumerate(prepared):
        if index not in refs:
            refs[index] = save_conversation(connection, now, item)
    return [refs[index] for index in range(len(prepared))]


def _first_versions(
    connection: Connection, now: datetime, new: Sequence[tuple[int, Any, str]]
) -> dict[int, int]:
    """Version 1 of each newly stored conversation: {conversation pk: version id}."""
    if not new:
        return {}
    rows = insert_rows(
        connection,
        conversation_versions,
        [
            {
                "conversation_pk": pk,
                "version": 1,
                "content_hash": digest,
                "payload": payload,
                "received_at": now,
            }
            for pk, payload, digest in new
        ],
        returning=(conversation_versions.c.id, conversation_versions.c.conversation_pk),
    )
    return {int(row.conversation_pk): int(row.id) for row in rows}


class KnownSnapshots:
    """What one process has learnt about snapshots: each snapshot object's `spec_hash`, and the
    hashes that are stored in the ledger, committed.

    Run plans share snapshot objects (built once per analyzer and procedure set), so a busy
    intake would hash, serialise and offer the same few snapshots (10-15 KB of JSON each) to
    the database in every batch. A hash is known stored once an insert of it met the row
    already there: ON CONFLICT waits for a concurrent insert of the same key, so a conflict
    means a committed row, and snapshots are never deleted. `forget()` after a failed batch
    (a restored or emptied database) makes the next batch offer them all again.
    """

    LIMIT = 1024

    def __init__(self) -> None:
        self._hashes: dict[int, tuple[AnalyzerSnapshot, str]] = {}
        self.stored: set[str] = set()

    def hash_of(self, snapshot: AnalyzerSnapshot) -> str:
        known = self._hashes.get(id(snapshot))
        if known is not None and known[0] is snapshot:
            return known[1]
        if len(self._hashes) >= self.LIMIT:
            self._hashes.clear()
        digest = snapshot.spec_hash()
        # The snapshot is held with its hash, so its id cannot be reused by another object.
        self._hashes[id(snapshot)] = (snapshot, digest)
        return digest

    def forget(self) -> None:
        self._hashes.clear()
        self.stored.clear()


def _save_snapshots(
    connection: Connection,
    now: datetime,
    entries: Sequence[RunsToRecord],
    known: KnownSnapshots | None,
) -> dict[int, str]:
    """Store each distinct snapshot of the batch once (none that `known` knows stored);
    {id(snapshot): spec_hash}."""
    distinct: dict[int, AnalyzerSnapshot] = {}
    for entry in entries:
        for plan in entry.plans:
            if plan.snapshot is not None:
                distinct.setdefault(id(plan.snapshot), plan.snapshot)
    hashes = {
        key: known.hash_of(snapshot) if known else snapshot.spec_hash()
        for key, snapshot in distinct.items()
    }
    by_hash = {
        hashes[key]: snapshot
        for key, snapshot in distinct.items()
        if known is None or hashes[key] not in known.stored
    }
    if by_hash:
        inserted = insert_rows(
            connection,
            analyzer_snapshots,
            [
                {
                    "spec_hash": spec_hash,
                    "analyzer": snapshot.analyzer,
                    "analyzer_version": snapshot.analyzer_version,
                    "snapshot": snapshot.model_dump(mode="json", by_alias=True),
                    "created_at": now,
                }
                for spec_hash, snapshot in sorted(by_hash.items())
            ],
            skip_conflicts_on=["spec_hash"],
            returning=(analyzer_snapshots.c.spec_hash,),
        )
        if known is not None:
            known.stored.update(set(by_hash) - {row.spec_hash for row in inserted})
    return hashes


def _run_rows(
    entry: RunsToRecord,
    ref: ConversationRef,
    now: datetime,
    hashes: dict[int, str],
    *,
    mark_sent: bool,
) -> list[dict[str, Any]]:
    """The `analysis_runs` rows for one entry (the same rows `record_runs` writes)."""
    if entry.trigger not in TRIGGERS:
        raise LedgerError(f"unknown trigger {entry.trigger!r}; expected one of {list(TRIGGERS)}")
    analyzers = [plan.analyzer for plan in entry.plans]
    versioned = [f"{plan.analyzer}@{plan.analyzer_version}" for plan in entry.plans]
    prefix = (
        f"{entry.trigger}:{ref.tenant_id}:{ref.conversation_id}:{ref.transcript_hash}"
        if entry.idempotent
        else None
    )
    repeated = sorted({name for name in versioned if versioned.count(name) > 1})
    if prefix is not None and repeated:
        raise LedgerError(
            f"analyzer(s) {repeated} planned twice under idempotency prefix {prefix!r}: "
            "each would get the same key"
        )
    rows = []
    for plan in entry.plans:
        run_id = uuid.uuid4().hex
        key_name = (
            f"{plan.analyzer}@{plan.analyzer_version}"
            if analyzers.count(plan.analyzer) > 1
            else plan.analyzer
        )
        row: dict[str, Any] = {
            "id": run_id,
            "conversation_pk": ref.pk,
            "analyzer": plan.analyzer,
            "analyzer_version": plan.analyzer_version,
            "status": "queued",
            "skip_reason": None,
            "trigger": entry.trigger,
            "attempts": 0,
            "max_attempts": plan.max_attempts,
            "attempt_budget": plan.max_attempts,
            "available_at": now,
            "created_at": now,
            "finished_at": None,
            "result": None,
            "rerun_of": None,
            "conversation_version_id": ref.version_id,
            "spec_hash": None if plan.snapshot is None else hashes[id(plan.snapshot)],
            "idempotency_key": None if prefix is None else f"{prefix}:{key_name}",
            "enqueued_at": None,
            "enqueue_count": 0,
        }
        if plan.skip_reason is not None:
            skipped = AnalysisResult(
                run_id=run_id,
                conversation_id=ref.conversation_id,
                tenant_id=ref.tenant_id,
                analyzer=plan.analyzer,
                analyzer_version=plan.analyzer_version,
                status="skipped",
                skip_reason=plan.skip_reason,
            )
            row |= {
                "status": "skipped",
                "skip_reason": plan.skip_reason,
                "finished_at": now,
                "result": skipped.model_dump(mode="json"),
            }
        elif mark_sent:
            row |= {"enqueued_at": now, "enqueue_count": 1}
        rows.append(row)
    return rows


def _insert_runs(connection: Connection, rows: list[dict[str, Any]]) -> list[RunRecord]:
    """Insert the rows (a row whose idempotency key exists is not inserted: the run holding the
    key is returned instead, `created=False`); the runs in the order of `rows`."""
    if not rows:
        return []
    inserted = insert_rows(
        connection, runs, rows, skip_conflicts_on=["idempotency_key"], returning=RUN_COLUMNS
    )
    found = {row.id: run_from_row(row, created=True) for row in inserted}
    taken = [row for row in rows if row["id"] not in found]
    if taken:
        keys = [row["idempotency_key"] for row in taken]
        earlier = {
            row.idempotency_key: row
            for row in connection.execute(
                sa.select(*RUN_COLUMNS).where(runs.c.idempotency_key.in_(keys))
            )
        }
        for row in taken:
            existing = earlier.get(row["idempotency_key"])
            if existing is None or existing.conversation_pk != row["conversation_pk"]:
                owner = "no run" if existing is None else f"run {existing.id!r}"
                raise LedgerError(
                    f"idempotency key {row['idempotency_key']!r} already belongs to {owner} "
                    f"outside conversation pk {row['conversation_pk']}"
                )
            found[row["id"]] = replace(run_from_row(existing), created=False)
    return [found[row["id"]] for row in rows]
