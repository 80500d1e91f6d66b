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

from analyzers.procedures.store import ProceduralMemoryStore, StoreOutcome
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
    rows = store.list(tenant_id=conversation.tenant_id)
    known = {_key(row.procedure) for row in rows}
    stored = [row.procedure for row in rows if row.status == "approved"]
    return stored + [p for p in catalog.procedures if _key(p) not in known]


def _key(procedure: Procedure) -> tuple[str | None, str | None, str]:
    return (procedure.tenant_id, procedure.agent_id, procedure.name)
