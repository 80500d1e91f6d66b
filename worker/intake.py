"""Intake: conversations in, runs recorded. Shared by the CLI, and later the webhook."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from analyzers.definitions.limits import InputLimits, active_limits
from analyzers.definitions.loading import (
    CONVERSATION_SUFFIXES,
    Problem,
    Sourced,
    drop_batch_duplicates,
    expand_paths,
    load_conversation_file,
)
from analyzers.definitions.sourcemap import SourceMap
from schemas.conversation import Conversation
from schemas.procedure import Procedure
from worker.catalog import Catalog
from worker.ledger import Ledger, RunRecord, Trigger
from worker.procedure_source import procedures_for


@dataclass
class LoadedInputs:
    """Conversations read from files, and the problems of the ones that could not be read."""

    conversations: list[Conversation] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def read_conversations(
    paths: Iterable[Path | str], limits: InputLimits | None = None
) -> LoadedInputs:
    """Every conversation in JSON files, JSON Lines files and folders of them.

    The paths are one batch: a conversation id seen earlier in it is a problem for the later
    record; an identical repeat is dropped, a different one is kept so both versions run.
    """
    limits = active_limits(limits)
    loaded = LoadedInputs()
    sourced: list[Sourced[Conversation]] = []
    for path in expand_paths(paths, CONVERSATION_SUFFIXES, loaded.problems):
        found = load_conversation_file(path, limits)
        # Only the record's first line is needed later (for duplicate reports): drop the raw
        # data and text so a large batch holds its conversations once.
        sourced += [
            Sourced(item.value, item.file, None, SourceMap({(): item.source_map.lines.get((), 1)}))
            for item in found.conversations
        ]
        loaded.problems += found.problems
    loaded.conversations = [item.value for item in drop_batch_duplicates(sourced, loaded.problems)]
    return loaded


def record(
    ledger: Ledger,
    catalog: Catalog,
    conversations: Sequence[Conversation],
    *,
    analyzers: Sequence[str] | None,
    trigger: Trigger,
    max_attempts: int,
    idempotent: bool,
) -> list[tuple[Conversation, RunRecord]]:
    """Persist each conversation and record one run per selected analyzer (queued or skipped).

    Each run is pinned to the conversation version just saved and to a snapshot of its analyzer
    (spec, procedures resolved from the procedure store, brief), so what a worker later runs is
    what was recorded here.
    With `idempotent`, submitting the same conversation content again returns the runs recorded
    the first time instead of new ones.
    """
    runs: list[tuple[Conversation, RunRecord]] = []
    by_tenant: dict[str, list[Procedure]] = {}  # one store read per tenant and batch
    for conversation in conversations:
        ref = ledger.save_conversation(conversation)
        tenant = conversation.tenant_id
        if tenant not in by_tenant:
            by_tenant[tenant] = procedures_for(ledger.procedures, catalog, conversation)
        plans = catalog.plan(conversation, analyzers, max_attempts, by_tenant[tenant])
        prefix = (
            f"{trigger}:{conversation.tenant_id}:{conversation.conversation_id}:{ref.transcript_hash}"
            if idempotent
            else None
        )
        recorded = ledger.record_runs(
            ref.pk,
            plans,
            trigger=trigger,
            idempotency_prefix=prefix,
            conversation_version_id=ref.version_id,
        )
        runs += [(conversation, run) for run in recorded]
    return runs
