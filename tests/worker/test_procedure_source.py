"""Recorded runs take their procedures from the procedure store: files are synced into it
idempotently, the snapshot freezes the store's approved version (so the run records the version
it used), a rejection in the store keeps the file's procedure out, and a new approved version is
used by the next run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.procedure import Procedure
from tests.analyzers.helpers import EXAMPLES, example_conversation
from worker.catalog import Catalog
from worker.intake import record
from worker.ledger import Ledger
from worker.procedure_source import TenantProcedureCache, procedures_for, sync_procedure_files


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as ledger:
        ledger.migrate()
        yield ledger


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load([EXAMPLES / "analyzers"], [EXAMPLES / "procedures"], builtins=False)


def snapshot_procedures(ledger: Ledger, catalog: Catalog, conversation_id: str) -> list[Procedure]:
    conversation = example_conversation("vendor_onboarding").model_copy(
        update={"conversation_id": conversation_id}
    )
    [(_, run)] = record(
        ledger,
        catalog,
        [conversation],
        analyzers=["vendor_onboarding_check"],
        trigger="cli",
        max_attempts=3,
        idempotent=False,
    )
    assert run.spec_hash is not None
    return list(ledger.get_snapshot(run.spec_hash).procedures)


def test_files_sync_idempotently_and_runs_record_the_store_version(
    ledger: Ledger, catalog: Catalog
) -> None:
    first = sync_procedure_files(ledger.procedures, catalog)
    assert [o.created for o in first] == [True] * len(catalog.procedures)
    again = sync_procedure_files(ledger.procedures, catalog)
    assert [o.created for o in again] == [False] * len(catalog.procedures)
    [used] = snapshot_procedures(ledger, catalog, "v-1")
    assert (used.name, used.version) == ("vendor_onboarding", 1)
    # A new version approved in the store (an admin's edit) is what the next run uses.
    edited = used.model_copy(update={"description": "Verify the vendor really exists."})
    assert ledger.procedures.store(edited).stored.version == 2
    [newer] = snapshot_procedures(ledger, catalog, "v-2")
    assert (newer.version, newer.description) == (2, "Verify the vendor really exists.")


def test_a_rejection_in_the_store_keeps_the_files_procedure_out(
    ledger: Ledger, catalog: Catalog
) -> None:
    [stored] = [
        o.stored
        for o in sync_procedure_files(ledger.procedures, catalog)
        if o.stored.name == "vendor_onboarding"
    ]
    ledger.procedures.reject(stored.id)
    # Syncing the unchanged file again does not bring it back.
    sync_procedure_files(ledger.procedures, catalog)
    assert snapshot_procedures(ledger, catalog, "v-3") == []


class CountingStore:
    """The ledger's procedure store, counting its reads."""

    def __init__(self, ledger: Ledger) -> None:
        self.inner = ledger.procedures
        self.reads = 0

    def list(self, **filters: object) -> object:
        self.reads += 1
        return self.inner.list(**filters)  # type: ignore[arg-type]


def test_the_tenant_cache_rereads_the_store_after_its_ttl_and_when_cleared(
    ledger: Ledger, catalog: Catalog
) -> None:
    [stored] = [
        o.stored
        for o in sync_procedure_files(ledger.procedures, catalog)
        if o.stored.name == "vendor_onboarding"
    ]
    conversation = example_conversation("vendor_onboarding")
    counting = CountingStore(ledger)
    now = [100.0]
    cache = TenantProcedureCache(counting, ttl_seconds=5, clock=lambda: now[0])  # type: ignore[arg-type]
    before = cache.procedures_for(catalog, conversation)
    assert before == procedures_for(ledger.procedures, catalog, conversation)
    assert "vendor_onboarding" in [p.name for p in before]
    # A rejection elsewhere: within the TTL the cached copy is used, without a read...
    ledger.procedures.reject(stored.id)
    now[0] += 4.9
    assert cache.procedures_for(catalog, conversation) == before
    assert counting.reads == 1
    # ...and once it has passed, the store is read again and the rejection applies.
    now[0] += 0.1
    after = cache.procedures_for(catalog, conversation)
    assert [p.name for p in after] == [p.name for p in before if p.name != "vendor_onboarding"]
    assert counting.reads == 2
    # A change made in this process clears the cache: the next call reads at once.
    cache.clear()
    cache.procedures_for(catalog, conversation)
    assert counting.reads == 3
    # Another tenant has its own entry.
    other = conversation.model_copy(update={"tenant_id": "someone_else"})
    cache.procedures_for(catalog, other)
    assert counting.reads == 4


def test_a_zero_ttl_reads_the_store_every_time(ledger: Ledger, catalog: Catalog) -> None:
    conversation = example_conversation("vendor_onboarding")
    counting = CountingStore(ledger)
    cache = TenantProcedureCache(counting, ttl_seconds=0)  # type: ignore[arg-type]
    for _ in range(3):
        cache.procedures_for(catalog, conversation)
    assert counting.reads == 3


def test_an_unsynced_ledger_still_uses_the_files(ledger: Ledger, catalog: Catalog) -> None:
    [used] = snapshot_procedures(ledger, catalog, "v-4")
    assert used.name == "vendor_onboarding"


AGENTS_OWN = """\
kind: procedure
name: agent_vendor_onboarding
tenant_id: globex
trigger: {description: Onboard a vendor., patterns: ["onboard * vendor"]}
parameters: [{name: vendor_name}]
steps:
  - tool: vendor_lookup
    arguments: {name: "{{vendor_name}}"}
  - tool: vendor_create
    arguments: {name: "{{vendor_name}}"}
"""

FOLLOWER = """\
kind: analyzer
name: follower
trigger: {}
description: Checks the vendor.
instructions: Check the vendor.
procedures: [agent_vendor_onboarding]
outputs:
  - {name: note, description: A note., schema: {type: string}}
"""


def test_tool_allowed_applies_only_where_an_analyzer_follows_the_procedure(
    tmp_path: Path,
) -> None:
    """A stored procedure describes the agent's own tools (`vendor_create` is the agent's, not
    any analyzer's): loading and importing it is fine; only an analyzer that follows it must be
    able to call its tools."""
    from analyzers.errors import ConfigError
    from worker.procedure_files import load_procedure_files

    procedures = tmp_path / "procedures"
    procedures.mkdir()
    (procedures / "own.yaml").write_text(AGENTS_OWN)
    catalog = Catalog.load([], [procedures], builtins=False)
    assert [p.name for p in catalog.procedures] == ["agent_vendor_onboarding"]
    loaded = load_procedure_files([procedures])
    assert loaded.problems == []
    assert len(loaded.procedures) == 1
    analyzers = tmp_path / "analyzers"
    analyzers.mkdir()
    (analyzers / "follower.yaml").write_text(FOLLOWER)
    with pytest.raises(ConfigError, match=r"tool-allowed"):
        Catalog.load([analyzers], [procedures], builtins=False)
