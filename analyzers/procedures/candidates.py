"""Learned candidates into the procedure store: one procedure per task, never two overlapping.

`record_candidate` takes a candidate captured from a successful conversation (see
`analyzers.procedures.capture`) and the store, and either adds the conversation as support to
the stored procedure it duplicates (same scope, same trigger, same tools up to optional steps),
stores a new (pending) version of it when the conversation showed extra or fewer steps, or
stores the candidate as a new pending procedure. An approved procedure that already covers the
conversation as is only gains support: nothing new to review. A rejected one is never revived:
a duplicate of it is dropped (a person already said no).

It talks to the store only through its contract (`ProceduralMemoryStore`), so the ledger's and
the in-memory store behave alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from analyzers.procedures.capture import find_duplicate
from analyzers.procedures.store import ProceduralMemoryStore, StoredProcedure
from schemas.procedure import Procedure

CaptureAction = Literal["created", "supported", "new_version", "rejected_before"]


@dataclass(frozen=True)
class CaptureOutcome:
    """What became of a candidate: the stored version it now counts toward, and how.

    `needs_review` is true when a person has something new to approve or reject (a new
    procedure or a new version), which is when a review message is sent.
    """

    action: CaptureAction
    stored: StoredProcedure

    @property
    def needs_review(self) -> bool:
        return self.action in ("created", "new_version") and self.stored.status == "pending"


def record_candidate(
    store: ProceduralMemoryStore,
    candidate: Procedure,
    *,
    conversation_id: str,
    customer_text: str,
) -> CaptureOutcome:
    """Store `candidate` (learned, pending) or count it toward the procedure it duplicates."""
    tenant = candidate.tenant_id or ""
    rows = [
        row
        for row in store.list(tenant_id=tenant, agent_id=candidate.agent_id)
        if (row.procedure.tenant_id, row.procedure.agent_id)
        == (candidate.tenant_id, candidate.agent_id)
    ]
    # Newest version per name first: a duplicate counts toward the version people see.
    newest: dict[str, StoredProcedure] = {}
    for row in rows:
        held = newest.get(row.name)
        if held is None or row.version > held.version:
            newest[row.name] = row
    live = [row for row in newest.values() if row.status != "rejected"]
    duplicate = find_duplicate(candidate, [row.procedure for row in live], customer_text)
    if duplicate is None:
        rejected = find_duplicate(
            candidate,
            [row.procedure for row in newest.values() if row.status == "rejected"],
            customer_text,
        )
        if rejected is not None:
            row = _row(newest.values(), rejected.existing)
            return CaptureOutcome("rejected_before", row)
        outcome = store.store(candidate, support=[conversation_id])
        return CaptureOutcome("created" if outcome.created else "supported", outcome.stored)
    existing = _row(live, duplicate.existing)
    if duplicate.kind == "support" or duplicate.merged is None:
        return CaptureOutcome("supported", store.add_support(existing.id, [conversation_id]))
    merged = duplicate.merged.model_copy(update={"approved": False, "created_by": "learned"})
    # The new version carries the support of the one it extends, and this conversation.
    outcome = store.store(merged, support=[*existing.support, conversation_id])
    return CaptureOutcome("new_version" if outcome.created else "supported", outcome.stored)


def _row(rows: Iterable[StoredProcedure], procedure: Procedure) -> StoredProcedure:
    return next(row for row in rows if row.procedure is procedure)
