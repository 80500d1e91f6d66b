"""The procedural memory store (seed 003's `IProceduralMemoryStore`): its contract, its records,
and an in-memory implementation for tests and single-process tools.

The ledger's implementation (`worker.ledger.procedures.LedgerProcedureStore`) keeps the same
contract in SQLite or PostgreSQL. Both decide visibility, recall and FindMatch with the pure
functions of `analyzers.procedures.recall`.

Semantics every implementation keeps:

- A procedure is keyed by (tenant, owner agent, name); each distinct content is a **version**.
  Storing content already stored under that key returns the stored version (`created=False`):
  imports are idempotent. Different content is a new version: the larger of the procedure's own
  `version` and the newest stored one plus one. Runs record the version they used (the
  analyzer snapshot freezes it).
- **Status**: `approved` (active), `pending` (a learned candidate awaiting review) or `rejected`.
  A procedure stored with `approved: true` (admin-written ones, by default) is approved on
  import; one with `approved: false` (learned ones, by default) starts pending. Only approved
  versions are active; per name the newest approved one is used.
- **Support**: the conversation ids that support a learned candidate (`add_support`, set-like).
- Tenant checks: `approve`/`reject`/`delete` given a `tenant_id` refuse a procedure that is not
  that tenant's own (`ProcedureNotFound`, as if it did not exist).

The methods are synchronous (the ledger's are short transactions); async callers use
`asyncio.to_thread`.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal, Protocol, runtime_checkable

from analyzers.procedures.recall import TaskMatch, active_procedures, find_match, is_visible
from schemas.procedure import Procedure

ProcedureStatus = Literal["approved", "pending", "rejected"]
PROCEDURE_STATUSES: tuple[ProcedureStatus, ...] = ("approved", "pending", "rejected")

ID_PREFIX = "proc_"

# What does not make a new version: the version number itself, the review state and the time.
_NOT_CONTENT = frozenset({"version", "approved", "created_at"})


class ProcedureNotFound(LookupError):
    """No stored procedure has that id (for that tenant)."""


@dataclass(frozen=True)
class StoredProcedure:
    """One stored version of a procedure.

    `procedure.approved` mirrors `status == "approved"`, so the pure matching functions, which
    only use approved procedures, see the review state.
    """

    id: str
    procedure: Procedure
    status: ProcedureStatus
    content_hash: str
    support: tuple[str, ...] = ()
    created_at: datetime | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None

    @property
    def name(self) -> str:
        return self.procedure.name

    @property
    def version(self) -> int:
        return self.procedure.version


@dataclass(frozen=True)
class StoreOutcome:
    """What `store` did: the stored version, and whether it is new (False: already stored)."""

    stored: StoredProcedure
    created: bool


@dataclass(frozen=True)
class FoundMatch:
    """FindMatch's answer: the stored version found and why (`match.path`, `match.reason`)."""

    stored: StoredProcedure
    match: TaskMatch


@runtime_checkable
class ProceduralMemoryStore(Protocol):
    """Seed 003's `IProceduralMemoryStore`, with review (reject) and support added."""

    def store(self, procedure: Procedure, *, support: Sequence[str] = ()) -> StoreOutcome:
        """Store `procedure` as a version (see the module docstring); `support` is added."""
        ...

    def get(self, procedure_id: str) -> StoredProcedure | None:
        """The stored version with this id, whatever its status."""
        ...

    def recall(self, name: str, *, tenant_id: str, agent_id: str | None) -> StoredProcedure | None:
        """The active (newest approved, visible) version called `name` for this agent."""
        ...

    def find_match(self, task: str, *, tenant_id: str, agent_id: str | None) -> FoundMatch | None:
        """The active procedure whose trigger describes `task` (patterns, then description)."""
        ...

    def active(self, *, tenant_id: str, agent_id: str | None) -> builtins.list[Procedure]:
        """Every active procedure for this agent (what the runtime is handed)."""
        ...

    def list(
        self,
        *,
        tenant_id: str | None = None,
        agent_id: str | None = None,
        status: ProcedureStatus | None = None,
        name: str | None = None,
    ) -> builtins.list[StoredProcedure]:
        """Every stored version, filtered: `tenant_id` (its own and every tenant's), `agent_id`
        (visible to that agent), `status`, `name`; by name, then newest version first."""
        ...

    def approve(
        self,
        procedure_id: str,
        *,
        tenant_id: str | None = None,
        by: str = "admin",
        only_if_pending: bool = False,
    ) -> StoredProcedure:
        """Make the version active; approving an approved one changes nothing. With
        `only_if_pending`, a version already decided is returned unchanged (the first of two
        reviewers wins; the caller compares the returned status with what it asked for)."""
        ...

    def reject(
        self,
        procedure_id: str,
        *,
        tenant_id: str | None = None,
        by: str = "admin",
        only_if_pending: bool = False,
    ) -> StoredProcedure:
        """Keep the version out of use; rejecting a rejected one changes nothing
        (`only_if_pending` as for `approve`)."""
        ...

    def delete(self, procedure_id: str, *, tenant_id: str | None = None) -> StoredProcedure:
        """Remove the version and its support; returns what was removed."""
        ...

    def add_support(self, procedure_id: str, conversation_ids: Iterable[str]) -> StoredProcedure:
        """Record conversations that support the version (each once)."""
        ...


def content_hash(procedure: Procedure) -> str:
    """sha256 of the procedure's content: everything but version, review state and time."""
    data = procedure.model_dump(mode="json", exclude=set(_NOT_CONTENT))
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def procedure_id(procedure: Procedure) -> str:
    """The id of a stored version: derived from its key and version, so the same procedure
    stored in two ledgers (or imported twice) has the same id."""
    p = procedure
    key = "\x1f".join([p.tenant_id or "", p.agent_id or "", p.name, str(p.version)])
    return ID_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:16]


def initial_status(procedure: Procedure) -> ProcedureStatus:
    """Approved when the procedure says so (admin-written), else pending (learned)."""
    return "approved" if procedure.approved else "pending"


def next_version(procedure: Procedure, newest: int | None) -> int:
    """The version a changed procedure is stored as."""
    return procedure.version if newest is None else max(procedure.version, newest + 1)


def with_status(procedure: Procedure, status: ProcedureStatus) -> Procedure:
    """`procedure` with `approved` mirroring `status`."""
    approved = status == "approved"
    return (
        procedure
        if procedure.approved == approved
        else procedure.model_copy(update={"approved": approved})
    )


def matches_filters(
    stored: StoredProcedure,
    tenant_id: str | None,
    agent_id: str | None,
    status: ProcedureStatus | None,
    name: str | None,
) -> bool:
    """The `list` filters, shared by the implementations."""
    p = stored.procedure
    if tenant_id is not None and p.tenant_id not in (None, tenant_id):
        return False
    if agent_id is not None and not is_visible(p, p.tenant_id or tenant_id or "", agent_id):
        return False
    if status is not None and stored.status != status:
        return False
    return name is None or p.name == name


def belongs_to(stored: StoredProcedure, tenant_id: str | None) -> bool:
    """Whether a caller acting for `tenant_id` (None: an operator, any tenant) may decide on or
    delete `stored`: only its own tenant's procedures, never another's or every tenant's."""
    return tenant_id is None or stored.procedure.tenant_id == tenant_id


def listing_order(stored: StoredProcedure) -> tuple[str, str, str, int]:
    p = stored.procedure
    return (p.name, p.tenant_id or "", p.agent_id or "", -p.version)


class ReviewDecisions:
    """`approve` and `reject` of a store (see `ProceduralMemoryStore`), both its `_decide`."""

    def _decide(
        self,
        procedure_id: str,
        status: ProcedureStatus,
        tenant_id: str | None,
        by: str,
        only_if_pending: bool,
    ) -> StoredProcedure:
        raise NotImplementedError

    def approve(
        self,
        procedure_id: str,
        *,
        tenant_id: str | None = None,
        by: str = "admin",
        only_if_pending: bool = False,
    ) -> StoredProcedure:
        return self._decide(procedure_id, "approved", tenant_id, by, only_if_pending)

    def reject(
        self,
        procedure_id: str,
        *,
        tenant_id: str | None = None,
        by: str = "admin",
        only_if_pending: bool = False,
    ) -> StoredProcedure:
        return self._decide(procedure_id, "rejected", tenant_id, by, only_if_pending)


class InMemoryProcedureStore(ReviewDecisions):
    """`ProceduralMemoryStore` in a dict: for tests and tools without a ledger. Thread-safe."""

    def __init__(self, *, now: Callable[[], datetime] | None = None) -> None:
        self._rows: dict[str, StoredProcedure] = {}
        self._lock = threading.Lock()
        self._now = now or (lambda: datetime.now(UTC))

    def store(self, procedure: Procedure, *, support: Sequence[str] = ()) -> StoreOutcome:
        digest = content_hash(procedure)
        with self._lock:
            same_key = [s for s in self._rows.values() if _key(s.procedure) == _key(procedure)]
            known = next((s for s in same_key if s.content_hash == digest), None)
            created = known is None
            if known is None:
                newest = max((s.version for s in same_key), default=None)
                version = next_version(procedure, newest)
                status = initial_status(procedure)
                stored_procedure = with_status(
                    procedure.model_copy(update={"version": version}), status
                )
                known = StoredProcedure(
                    id=procedure_id(stored_procedure),
                    procedure=stored_procedure,
                    status=status,
                    content_hash=digest,
                    created_at=self._now(),
                )
            known = _supported(known, support)
            self._rows[known.id] = known
        return StoreOutcome(known, created)

    def get(self, procedure_id: str) -> StoredProcedure | None:
        return self._rows.get(procedure_id)

    def recall(self, name: str, *, tenant_id: str, agent_id: str | None) -> StoredProcedure | None:
        active = self.active(tenant_id=tenant_id, agent_id=agent_id)
        found = next((p for p in active if p.name == name), None)
        return None if found is None else self._row_of(found)

    def find_match(self, task: str, *, tenant_id: str, agent_id: str | None) -> FoundMatch | None:
        match = find_match(self._procedures(), task, tenant_id, agent_id)
        return None if match is None else FoundMatch(self._row_of(match.procedure), match)

    def active(self, *, tenant_id: str, agent_id: str | None) -> builtins.list[Procedure]:
        return active_procedures(self._procedures(), tenant_id, agent_id)

    def list(
        self,
        *,
        tenant_id: str | None = None,
        agent_id: str | None = None,
        status: ProcedureStatus | None = None,
        name: str | None = None,
    ) -> builtins.list[StoredProcedure]:
        rows = list(self._rows.values())
        found = [s for s in rows if matches_filters(s, tenant_id, agent_id, status, name)]
        return sorted(found, key=listing_order)

    def delete(self, procedure_id: str, *, tenant_id: str | None = None) -> StoredProcedure:
        with self._lock:
            stored = self._owned(procedure_id, tenant_id)
            del self._rows[procedure_id]
        return stored

    def add_support(self, procedure_id: str, conversation_ids: Iterable[str]) -> StoredProcedure:
        with self._lock:
            stored = _supported(self._owned(procedure_id, None), conversation_ids)
            self._rows[procedure_id] = stored
        return stored

    def _decide(
        self,
        procedure_id: str,
        status: ProcedureStatus,
        tenant_id: str | None,
        by: str,
        only_if_pending: bool,
    ) -> StoredProcedure:
        with self._lock:
            stored = self._owned(procedure_id, tenant_id)
            if stored.status == status or (only_if_pending and stored.status != "pending"):
                return stored
            stored = replace(
                stored,
                status=status,
                procedure=with_status(stored.procedure, status),
                decided_at=self._now(),
                decided_by=by,
            )
            self._rows[procedure_id] = stored
        return stored

    def _owned(self, procedure_id: str, tenant_id: str | None) -> StoredProcedure:
        stored = self._rows.get(procedure_id)
        if stored is None or not belongs_to(stored, tenant_id):
            raise ProcedureNotFound(procedure_id)
        return stored

    def _procedures(self) -> builtins.list[Procedure]:
        return [s.procedure for s in self._rows.values()]

    def _row_of(self, procedure: Procedure) -> StoredProcedure:
        return self._rows[procedure_id(procedure)]


def _key(procedure: Procedure) -> tuple[str, str, str]:
    return (procedure.tenant_id or "", procedure.agent_id or "", procedure.name)


def _supported(stored: StoredProcedure, conversation_ids: Iterable[str]) -> StoredProcedure:
    support = tuple(dict.fromkeys([*stored.support, *conversation_ids]))
    return stored if support == stored.support else replace(stored, support=support)
