"""Which stored conversations a `RerunSelection` picks, read from the ledger.

The cheap criteria (tenant, time window, ids) are SQL; agent, outcome and `where` (CEL over the
conversation, as in triggers) are checked on each candidate's newest stored version; `failed_only`
compares with the analyzer's latest run on each conversation. Problems with the selection itself
are `SelectionError`s naming the option.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from analyzers.definitions.expressions import (
    CONVERSATION_VARIABLES,
    Expression,
    ExpressionError,
    compile_expression,
    conversation_variables,
)
from schemas.conversation import Conversation, outcome_key
from schemas.rerun import RerunSelection
from worker.ledger.tables import analysis_runs, conversation_versions, conversations

runs = analysis_runs


class SelectionError(ValueError):
    """The selection cannot be used as given; the message names the option and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Selected:
    """A conversation the selection picked, at its newest stored version."""

    conversation_pk: int
    conversation_version_id: int | None
    conversation: Conversation


def compile_where(source: str | None) -> Expression | None:
    """The `--where` expression, compiled and checked against the conversation variables."""
    if source is None:
        return None
    try:
        return compile_expression(source, known=CONVERSATION_VARIABLES)
    except ExpressionError as exc:
        raise SelectionError("--where", str(exc)) from None


def select_conversations(
    connection: Connection, selection: RerunSelection, *, chunk: int = 500
) -> Iterator[Selected]:
    """Every conversation the selection picks, oldest received first.

    A conversation `where` cannot be evaluated on (a missing key, say) is not selected.
    """
    where = compile_where(selection.where)
    current = conversation_versions
    query = (
        sa.select(conversations.c.id, current.c.id.label("version_id"), conversations.c.payload)
        .select_from(
            conversations.outerjoin(
                current,
                sa.and_(
                    current.c.conversation_pk == conversations.c.id,
                    current.c.content_hash == conversations.c.transcript_hash,
                ),
            )
        )
        .order_by(conversations.c.updated_at, conversations.c.id)
    )
    if selection.tenant is not None:
        query = query.where(conversations.c.tenant_id == selection.tenant)
    if selection.since is not None:
        query = query.where(conversations.c.updated_at >= selection.since)
    if selection.until is not None:
        query = query.where(conversations.c.updated_at < selection.until)
    if selection.conversations:
        query = query.where(conversations.c.conversation_id.in_(selection.conversations))
    if selection.failed_only:
        query = query.where(_latest_run_failed(selection.analyzer))
    wanted_outcome = None if selection.outcome is None else outcome_key(selection.outcome)
    for row in connection.execute(query.execution_options(yield_per=chunk)):
        payload = row.payload
        if selection.agent is not None and payload.get("agent_id") != selection.agent:
            continue
        if (
            wanted_outcome is not None
            and outcome_key(str(payload.get("outcome"))) != wanted_outcome
        ):
            continue
        try:
            conversation = Conversation.model_validate(payload)
        except ValidationError:
            continue  # stored before today's contract; nothing to rerun it with
        if where is not None:
            try:
                if not where.holds(conversation_variables(conversation)):
                    continue
            except ExpressionError:
                continue
        yield Selected(row.id, row.version_id, conversation)


def _latest_run_failed(analyzer: str) -> sa.ColumnElement[bool]:
    latest = (
        sa.select(runs.c.status)
        .where(runs.c.conversation_pk == conversations.c.id, runs.c.analyzer == analyzer)
        .order_by(runs.c.created_at.desc(), runs.c.id.desc())
        .limit(1)
        .correlate(conversations)
        .scalar_subquery()
    )
    return latest == "failed"
