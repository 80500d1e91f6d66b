"""Read-only queries over stored results, for standalone analyzers' ledger tools.

Every query is bounded by the caller's selection (one tenant, a time range of when runs
finished); the tools' own arguments can only narrow it. Results are succeeded runs' stored
`AnalysisResult`s, newest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from analyzers.tools.stored_results import ResultsQuery, StoredResult
from schemas import AnalysisResult, Conversation
from worker.ledger import conversations as conversation_store
from worker.ledger.tables import analysis_runs, conversations

SCAN_LIMIT = 5_000
"""Rows one query may read while filtering by output field: the bound on one tool call's cost."""


def query_results(
    connection: Connection,
    query: ResultsQuery,
    *,
    tenant: str,
    since: datetime,
    until: datetime,
) -> Sequence[StoredResult]:
    """Succeeded results of `query.analyzer` in `tenant` that finished in [since, until) and in
    the query's own narrower range, newest first; with `query.field`, only those that recorded
    at least one value of that output."""
    if query.tenant is not None and query.tenant != tenant:
        return []
    low = max(since, query.since) if query.since is not None else since
    high = min(until, query.until) if query.until is not None else until
    if low >= high:
        return []
    runs = analysis_runs
    statement = (
        sa.select(runs.c.result, runs.c.finished_at, conversations.c.conversation_id)
        .select_from(runs.join(conversations, conversations.c.id == runs.c.conversation_pk))
        .where(
            runs.c.analyzer == query.analyzer,
            runs.c.status == "succeeded",
            runs.c.result.is_not(None),
            conversations.c.tenant_id == tenant,
            runs.c.finished_at >= low,
            runs.c.finished_at < high,
        )
        .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
        .limit(SCAN_LIMIT)
    )
    found: list[StoredResult] = []
    skipped = 0
    for row in connection.execute(statement):
        try:
            result = AnalysisResult.model_validate(row.result)
        except ValidationError:
            continue  # stored under an older contract; nothing the tool can show
        outputs = {
            name: [item.value if not item.unknown else "unknown" for item in items]
            for name, items in result.outputs.items()
        }
        if query.field is not None and not [
            item for item in result.outputs.get(query.field, []) if not item.unknown
        ]:
            continue
        if skipped < query.offset:
            skipped += 1
            continue
        found.append(
            StoredResult(
                run_id=result.run_id,
                conversation_id=row.conversation_id,
                tenant_id=tenant,
                analyzer=result.analyzer,
                analyzer_version=result.analyzer_version,
                finished_at=row.finished_at,
                outputs=outputs,
            )
        )
        if len(found) >= query.limit:
            break
    return found


def stored_conversation(
    connection: Connection, tenant: str, conversation_id: str
) -> Conversation | None:
    """The current content of `tenant`'s conversation `conversation_id`, or None."""
    pk = connection.execute(
        sa.select(conversations.c.id).where(
            conversations.c.tenant_id == tenant,
            conversations.c.conversation_id == conversation_id,
        )
    ).scalar_one_or_none()
    if pk is None:
        return None
    return conversation_store.get_conversation(connection, pk)
