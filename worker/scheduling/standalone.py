"""Standalone runs: an `input: results` analyzer over the stored results of a tenant and time
range, recorded and executed like any other run.

A run in the ledger belongs to a conversation, so a standalone run is recorded against a
*selection record*: a conversation stored under the id `standalone:<schedule>:<slot>` (or
`standalone:<analyzer>:<until>` when not scheduled) whose metadata holds the selection (tenant,
since, until) and whose one system turn describes it to the model. The engine sees the
analyzer's `input: results`, reads the selection back and gives the run's ledger tools a reader
bounded to it. Everything else (snapshot, attempts, retries, results, deliveries) is what every
run gets. Recording is idempotent by the selection record's id: firing the same slot again
returns the run recorded the first time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from analyzers.definitions.versions import parse_selector
from analyzers.errors import ConfigError
from analyzers.runtime.snapshot import build_snapshot
from analyzers.tools.stored_results import ResultsQuery, StoredResult
from schemas.conversation import Conversation, Turn
from worker.catalog import Catalog
from worker.ledger import Ledger, RunPlan, RunRecord
from worker.ledger.result_queries import query_results, stored_conversation

SELECTION_KEY = "posthoc_selection"
"""The metadata key of a selection record that holds the selection."""
STANDALONE_PREFIX = "standalone:"


@dataclass(frozen=True)
class ResultsSelection:
    """The stored results a standalone run works over: one tenant, runs finished in
    [since, until)."""

    tenant: str
    since: datetime
    until: datetime
    schedule: str | None = None
    scheduled_for: datetime | None = None

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("a results selection needs timezone-aware since and until")
        if self.since >= self.until:
            raise ValueError("a results selection's since must come before its until")

    @property
    def scope(self) -> str:
        """One line for the model: which results it can see."""
        return (
            f"tenant {self.tenant}, results finished from {self.since.isoformat()} "
            f"to {self.until.isoformat()}"
        )

    def to_metadata(self) -> dict[str, Any]:
        """The selection as a selection record's metadata value."""
        return {
            "tenant": self.tenant,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "schedule": self.schedule,
            "scheduled_for": None if self.scheduled_for is None else self.scheduled_for.isoformat(),
        }

    @classmethod
    def from_conversation(cls, conversation: Conversation) -> ResultsSelection | None:
        """The selection a selection record holds, or None for any other conversation."""
        raw = conversation.metadata.get(SELECTION_KEY)
        if not isinstance(raw, dict) or not conversation.conversation_id.startswith(
            STANDALONE_PREFIX
        ):
            return None
        try:
            scheduled = raw.get("scheduled_for")
            return cls(
                tenant=str(raw["tenant"]),
                since=datetime.fromisoformat(str(raw["since"])),
                until=datetime.fromisoformat(str(raw["until"])),
                schedule=raw.get("schedule"),
                scheduled_for=None if scheduled is None else datetime.fromisoformat(scheduled),
            )
        except (KeyError, TypeError, ValueError):
            return None


def selection_record(analyzer: str, selection: ResultsSelection) -> Conversation:
    """The conversation a standalone run is recorded against (see the module docstring)."""
    anchor = selection.scheduled_for or selection.until
    owner = selection.schedule or analyzer
    stamp = anchor.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = (
        f"Standalone run of {analyzer}: you work over stored results, not one conversation. "
        f"Your tools see {selection.scope}."
        + (f" Scheduled by {selection.schedule}." if selection.schedule else "")
    )
    return Conversation(
        conversation_id=f"{STANDALONE_PREFIX}{owner}:{stamp}",
        tenant_id=selection.tenant,
        channel="other",
        started_at=selection.since,
        ended_at=selection.until,
        outcome="standalone",
        turns=[Turn(role="system", text=text, at=selection.until)],
        metadata={SELECTION_KEY: selection.to_metadata()},
    )


def record_standalone_run(
    ledger: Ledger,
    catalog: Catalog,
    analyzer: str,
    selection: ResultsSelection,
    *,
    max_attempts: int,
) -> RunRecord:
    """Record (or find, when recorded before) the standalone run of `analyzer` (NAME or
    NAME@VERSION) over `selection`; `created` says which. A `ConfigError` names an analyzer
    that is not loaded or not standalone."""
    spec = catalog.get(*parse_selector(analyzer))
    if spec is None:
        raise ConfigError(
            f"standalone.analyzer: {analyzer!r} is not loaded (known: {sorted(catalog.versions)})"
        )
    if spec.input != "results":
        raise ConfigError(
            f"standalone.analyzer: {analyzer!r} reads one conversation; a standalone run needs "
            "an analyzer with input: results"
        )
    record = selection_record(spec.name, selection)
    ref = ledger.save_conversation(record)
    plan = RunPlan(
        analyzer=spec.name,
        analyzer_version=spec.version,
        max_attempts=max_attempts,
        snapshot=build_snapshot(spec, record, catalog.procedures),
    )
    (run,) = ledger.record_runs(
        ref.pk,
        [plan],
        trigger="schedule" if selection.schedule else "api",
        idempotency_prefix=record.conversation_id,
        conversation_version_id=ref.version_id,
    )
    return run


class LedgerResultsReader:
    """The `ResultsReader` a standalone run's tools use: ledger reads bounded to its
    selection, each in a thread so the event loop keeps turning."""

    def __init__(self, ledger: Ledger, selection: ResultsSelection) -> None:
        self.ledger = ledger
        self.selection = selection

    @property
    def scope(self) -> str:
        return self.selection.scope

    async def query(self, query: ResultsQuery) -> Sequence[StoredResult]:
        return await asyncio.to_thread(self._query, query)

    async def conversation(self, conversation_id: str, tenant: str | None) -> Conversation | None:
        if tenant is not None and tenant != self.selection.tenant:
            return None
        return await asyncio.to_thread(self._conversation, conversation_id)

    def _query(self, query: ResultsQuery) -> Sequence[StoredResult]:
        with self.ledger.engine.connect() as connection, connection.begin():
            return query_results(
                connection,
                query,
                tenant=self.selection.tenant,
                since=self.selection.since,
                until=self.selection.until,
            )

    def _conversation(self, conversation_id: str) -> Conversation | None:
        with self.ledger.engine.connect() as connection, connection.begin():
            return stored_conversation(connection, self.selection.tenant, conversation_id)
