"""What a standalone run's ledger tools read: the selection it was recorded for, and a reader
bounded to it.

A standalone (`input: results`) run is recorded against a selection record (see
`worker/scheduling/standalone.py`); the engine reads the selection back from it with
`ResultsSelection.from_conversation` and hands the run a `LedgerResultsReader`, so its tools see
one tenant and one time range of stored results, read-only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from analyzers.tools.stored_results import ResultsQuery, StoredResult
from schemas.conversation import Conversation
from worker.ledger import Ledger
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
