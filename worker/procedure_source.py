"""Where recorded runs get their procedures: the procedure store, with the procedure files.

The runtime follows the procedures the worker hands it (frozen in each run's snapshot). They
come from the ledger's procedure store: its approved versions for the conversation's tenant.
Procedure files (`POSTHOC_PROCEDURE_DIRS`, `--analyzers-dir`, the demo's examples) are how
people author procedures; the commands that record runs import them into the store first,
idempotently (`sync_procedure_files`), so an unchanged file is the version already stored and a
person's review in the store (a rejection) is never undone by the file.

A file procedure the store does not know under its (tenant, agent, name) at all is still used
as the file says, so a ledger that has not been synced behaves as before the store existed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from analyzers.procedures.store import ProceduralMemoryStore, StoredProcedure, StoreOutcome
from schemas.conversation import Conversation
from schemas.procedure import Procedure
from worker.catalog import Catalog
from worker.procedure_files import import_procedures


def sync_procedure_files(store: ProceduralMemoryStore, catalog: Catalog) -> list[StoreOutcome]:
    """Import the catalog's procedure files into the store (unchanged ones change nothing)."""
    return import_procedures(store, catalog.procedures)


def procedures_for(
    store: ProceduralMemoryStore, catalog: Catalog, conversation: Conversation
) -> list[Procedure]:
    """Every procedure a run on `conversation` may resolve from: the store's approved versions
    of its tenant (and of every tenant), and the file procedures the store does not know.
    Scope by agent and the choice of version are the snapshot's (`resolve_procedures`)."""
    return _available(store.list(tenant_id=conversation.tenant_id), catalog)


class TenantProcedureCache:
    """`procedures_for`, reading each tenant's procedures from the store at most once every
    `ttl_seconds` (0: every call).

    The webhook intake plans runs for every delivery, and a tenant's procedures change when a
    person reviews one: reading them from the database per delivery cost a round trip and a
    third of the intake's CPU. A procedure approved elsewhere (the CLI, another process) is
    used by runs recorded here within `ttl_seconds`; `clear()` after a change made in this
    process applies it at once.
    """

    def __init__(
        self,
        store: ProceduralMemoryStore,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._read: dict[str, tuple[float, list[StoredProcedure]]] = {}

    def procedures_for(self, catalog: Catalog, conversation: Conversation) -> list[Procedure]:
        tenant = conversation.tenant_id
        rows = self._fresh(tenant)
        if rows is None:
            read_at = self._clock()
            rows = self._store.list(tenant_id=tenant)
            if self._ttl > 0:
                with self._lock:
                    self._read[tenant] = (read_at, rows)
        return _available(rows, catalog)

    def cached(self, tenant_id: str) -> bool:
        """Whether `procedures_for` on this tenant would use its cached copy (no read)."""
        return self._fresh(tenant_id) is not None

    def _fresh(self, tenant_id: str) -> list[StoredProcedure] | None:
        """The tenant's cached rows if read less than `ttl_seconds` ago."""
        with self._lock:
            cached = self._read.get(tenant_id)
        if cached is None or self._clock() - cached[0] >= self._ttl:
            return None
        return cached[1]

    def clear(self) -> None:
        with self._lock:
            self._read.clear()


def _available(rows: list[StoredProcedure], catalog: Catalog) -> list[Procedure]:
    known = {_key(row.procedure) for row in rows}
    stored = [row.procedure for row in rows if row.status == "approved"]
    return stored + [p for p in catalog.procedures if _key(p) not in known]


def _key(procedure: Procedure) -> tuple[str | None, str | None, str]:
    return (procedure.tenant_id, procedure.agent_id, procedure.name)
