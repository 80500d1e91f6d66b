"""`LedgerProcedureStore`: the procedural memory store in the ledger's `procedures` tables.

The contract and its semantics are `analyzers.procedures.store.ProceduralMemoryStore`'s; this
module only keeps them in SQLite or PostgreSQL. Reads select a tenant's rows (and every
tenant's) in SQL and decide visibility, recall and FindMatch with the pure functions of
`analyzers.procedures.recall`, so the store and an analyzer handed the same procedures agree.

Storing is one write transaction. Two processes storing the same new content at once meet the
unique constraint on (tenant, agent, name, content_hash): the loser reads the winner's row.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from analyzers.procedures.recall import active_procedures, find_match
from analyzers.procedures.store import (
    FoundMatch,
    ProcedureNotFound,
    ProcedureStatus,
    ReviewDecisions,
    StoredProcedure,
    StoreOutcome,
    belongs_to,
    content_hash,
    initial_status,
    listing_order,
    matches_filters,
    next_version,
    procedure_id,
    with_status,
)
from schemas.procedure import Procedure
from worker.ledger._sql import upsert_insert
from worker.ledger.clock import Clock, utc_now
from worker.ledger.engine import read_transaction, write_transaction
from worker.ledger.tables import procedure_support, procedures

STORE_ATTEMPTS = 3
"""Tries of a store that lost a race on the unique constraints (then the winner is read)."""


class LedgerProcedureStore(ReviewDecisions):
    """The procedure store on the ledger database behind `engine` (the `Ledger`'s engine).

    :param now: the clock for created and decided times; the ledger's clock in tests.
    """

    def __init__(self, engine: Engine, *, now: Clock = utc_now) -> None:
        self._engine = engine
        self._now = now

    def store(self, procedure: Procedure, *, support: Sequence[str] = ()) -> StoreOutcome:
        digest = content_hash(procedure)
        for attempt in range(STORE_ATTEMPTS):
            try:
                with self._write() as connection:
                    return self._store(connection, procedure, digest, support)
            except IntegrityError:
                if attempt == STORE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, procedure_id: str) -> StoredProcedure | None:
        with self._read() as connection:
            rows = connection.execute(
                sa.select(procedures).where(procedures.c.id == procedure_id)
            ).all()
            found = self._stored(connection, rows)
        return found[0] if found else None

    def recall(self, name: str, *, tenant_id: str, agent_id: str | None) -> StoredProcedure | None:
        rows = self._tenant_rows(tenant_id, status="approved")
        by_id = {row.id: row for row in rows}
        active = active_procedures((row.procedure for row in rows), tenant_id, agent_id)
        found = next((p for p in active if p.name == name), None)
        return None if found is None else by_id[procedure_id(found)]

    def find_match(self, task: str, *, tenant_id: str, agent_id: str | None) -> FoundMatch | None:
        rows = self._tenant_rows(tenant_id, status="approved")
        by_id = {row.id: row for row in rows}
        match = find_match((row.procedure for row in rows), task, tenant_id, agent_id)
        return None if match is None else FoundMatch(by_id[procedure_id(match.procedure)], match)

    def active(self, *, tenant_id: str, agent_id: str | None) -> builtins.list[Procedure]:
        rows = self._tenant_rows(tenant_id, status="approved")
        return active_procedures((row.procedure for row in rows), tenant_id, agent_id)

    def list(
        self,
        *,
        tenant_id: str | None = None,
        agent_id: str | None = None,
        status: ProcedureStatus | None = None,
        name: str | None = None,
    ) -> builtins.list[StoredProcedure]:
        query = sa.select(procedures)
        if tenant_id is not None:
            query = query.where(procedures.c.tenant_id.in_([tenant_id, ""]))
        if status is not None:
            query = query.where(procedures.c.status == status)
        if name is not None:
            query = query.where(procedures.c.name == name)
        with self._read() as connection:
            rows = self._stored(connection, connection.execute(query).all())
        found = [s for s in rows if matches_filters(s, tenant_id, agent_id, status, name)]
        return sorted(found, key=listing_order)

    def delete(self, procedure_id: str, *, tenant_id: str | None = None) -> StoredProcedure:
        with self._write() as connection:
            stored = self._owned(connection, procedure_id, tenant_id)
            connection.execute(
                procedure_support.delete().where(procedure_support.c.procedure_id == procedure_id)
            )
            connection.execute(procedures.delete().where(procedures.c.id == procedure_id))
        return stored

    def add_support(self, procedure_id: str, conversation_ids: Iterable[str]) -> StoredProcedure:
        with self._write() as connection:
            self._owned(connection, procedure_id, None)
            self._add_support(connection, procedure_id, conversation_ids)
            return self._owned(connection, procedure_id, None)

    # The Slack review message (worker/sinks/procedure_review.py)

    def review_of(self, procedure_id: str) -> dict[str, Any] | None:
        """The review message's state (channel, attempts, receipt), or None before any post."""
        with self._read() as connection:
            review = connection.execute(
                sa.select(procedures.c.review).where(procedures.c.id == procedure_id)
            ).scalar()
        return cast(dict[str, Any] | None, review)

    def save_review(self, procedure_id: str, review: dict[str, Any]) -> None:
        """Record the review message's state, committed at once (before and after each post)."""
        with self._write() as connection:
            updated = connection.execute(
                procedures.update().where(procedures.c.id == procedure_id).values(review=review)
            )
        if updated.rowcount != 1:
            raise ProcedureNotFound(procedure_id)

    # Internals

    def _store(
        self, connection: Connection, procedure: Procedure, digest: str, support: Sequence[str]
    ) -> StoreOutcome:
        key = (
            (procedures.c.tenant_id == (procedure.tenant_id or ""))
            & (procedures.c.agent_id == (procedure.agent_id or ""))
            & (procedures.c.name == procedure.name)
        )
        known = connection.execute(
            sa.select(procedures.c.id).where(key & (procedures.c.content_hash == digest))
        ).scalar()
        created = known is None
        if known is None:
            newest = connection.execute(sa.select(sa.func.max(procedures.c.version)).where(key))
            status = initial_status(procedure)
            stored = with_status(
                procedure.model_copy(update={"version": next_version(procedure, newest.scalar())}),
                status,
            )
            known = procedure_id(stored)
            connection.execute(
                procedures.insert().values(
                    id=known,
                    tenant_id=stored.tenant_id or "",
                    agent_id=stored.agent_id or "",
                    name=stored.name,
                    version=stored.version,
                    status=status,
                    created_by=stored.created_by,
                    content_hash=digest,
                    body=stored.model_dump(mode="json"),
                    created_at=self._now(),
                )
            )
        self._add_support(connection, known, support)
        return StoreOutcome(self._owned(connection, known, None), created)

    def _decide(
        self,
        procedure_id: str,
        status: ProcedureStatus,
        tenant_id: str | None,
        by: str,
        only_if_pending: bool,
    ) -> StoredProcedure:
        with self._write() as connection:
            stored = self._owned(connection, procedure_id, tenant_id)
            if stored.status == status or (only_if_pending and stored.status != "pending"):
                return stored  # a second click, a retried request: nothing changes
            # Conditional on the status read: of two concurrent decisions (PostgreSQL reads
            # committed), the second matches nothing and returns the first one's outcome.
            connection.execute(
                procedures.update()
                .where(procedures.c.id == procedure_id, procedures.c.status == stored.status)
                .values(
                    status=status,
                    body=with_status(stored.procedure, status).model_dump(mode="json"),
                    decided_at=self._now(),
                    decided_by=by[:200],
                )
            )
            return self._owned(connection, procedure_id, None)

    def _owned(
        self, connection: Connection, procedure_id: str, tenant_id: str | None
    ) -> StoredProcedure:
        rows = connection.execute(
            sa.select(procedures).where(procedures.c.id == procedure_id)
        ).all()
        found = self._stored(connection, rows)
        if not found or not belongs_to(found[0], tenant_id):
            raise ProcedureNotFound(procedure_id)
        return found[0]

    def _add_support(
        self, connection: Connection, procedure_id: str, conversation_ids: Iterable[str]
    ) -> None:
        wanted = list(dict.fromkeys(conversation_ids))
        if not wanted:
            return
        now = self._now()
        insert = upsert_insert(connection, procedure_support)
        connection.execute(
            insert.on_conflict_do_nothing(),
            [{"procedure_id": procedure_id, "conversation_id": c, "added_at": now} for c in wanted],
        )

    def _tenant_rows(
        self, tenant_id: str, *, status: ProcedureStatus
    ) -> builtins.list[StoredProcedure]:
        query = sa.select(procedures).where(
            procedures.c.tenant_id.in_([tenant_id, ""]), procedures.c.status == status
        )
        with self._read() as connection:
            return self._stored(connection, connection.execute(query).all())

    def _stored(
        self, connection: Connection, rows: Sequence[Any]
    ) -> builtins.list[StoredProcedure]:
        if not rows:
            return []
        ids = [row.id for row in rows]
        support: dict[str, list[str]] = {}
        for procedure, conversation in connection.execute(
            sa.select(procedure_support.c.procedure_id, procedure_support.c.conversation_id)
            .where(procedure_support.c.procedure_id.in_(ids))
            .order_by(procedure_support.c.added_at, procedure_support.c.conversation_id)
        ):
            support.setdefault(procedure, []).append(conversation)
        return [
            StoredProcedure(
                id=row.id,
                procedure=Procedure.model_validate(row.body),
                status=cast(ProcedureStatus, row.status),
                content_hash=row.content_hash,
                support=tuple(support.get(row.id, ())),
                created_at=row.created_at,
                decided_at=row.decided_at,
                decided_by=row.decided_by,
            )
            for row in rows
        ]

    def _write(self) -> AbstractContextManager[Connection]:
        return write_transaction(self._engine)

    def _read(self) -> AbstractContextManager[Connection]:
        return read_transaction(self._engine)
