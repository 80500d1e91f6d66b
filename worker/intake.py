"""Intake: conversations in, runs recorded. Shared by the CLI, and later the webhook."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from analyzers.definitions.loading import (
    CONVERSATION_SUFFIXES,
    Problem,
    expand_paths,
    load_conversation_file,
)
from schemas.conversation import Conversation
from worker.catalog import Catalog
from worker.ledger import Ledger, RunRecord, Trigger


@dataclass
class LoadedInputs:
    """Conversations read from files, and the problems of the ones that could not be read."""

    conversations: list[Conversation] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def read_conversations(paths: Iterable[Path | str]) -> LoadedInputs:
    """Every conversation in JSON files, JSON Lines files and folders of them."""
    loaded = LoadedInputs()
    for path in expand_paths(paths, CONVERSATION_SUFFIXES, loaded.problems):
        found = load_conversation_file(path)
        loaded.conversations += [sourced.value for sourced in found.conversations]
        loaded.problems += found.problems
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
    (spec, resolved procedures, brief), so what a worker later runs is what was recorded here.
    With `idempotent`, submitting the same conversation content again returns the runs recorded
    the first time instead of new ones.
    """
    runs: list[tuple[Conversation, RunRecord]] = []
    for conversation in conversations:
        ref = ledger.save_conversation(conversation)
        plans = catalog.plan(conversation, analyzers, max_attempts)
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
