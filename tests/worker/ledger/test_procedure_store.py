"""The procedure store's contract, on the in-memory store and on the ledger (SQLite and
PostgreSQL): scope by tenant and owner agent, approval, versions, support, FindMatch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analyzers.definitions.loading import load_paths
from analyzers.procedures.store import (
    InMemoryProcedureStore,
    ProceduralMemoryStore,
    ProcedureNotFound,
)
from schemas.procedure import Procedure
from worker.ledger import Ledger, ManualClock

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "procedures"

STORES = ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


@pytest.fixture(params=STORES)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[ProceduralMemoryStore]:
    if request.param == "memory":
        yield InMemoryProcedureStore(now=clock)
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'posthoc.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    ledger = Ledger.from_url(url, now=clock)
    ledger.migrate()  # a no-op once the session's database is at the head
    if request.param == "postgresql":
        with ledger.engine.begin() as connection:
            connection.exec_driver_sql("TRUNCATE procedure_support, procedures")
    try:
        yield ledger.procedures
    finally:
        ledger.dispose()


def procedure(name: str = "refunds", **changes: Any) -> Procedure:
    data: dict[str, Any] = {
        "name": name,
        "trigger": {
            "description": "When a customer asks for a refund of an order.",
            "patterns": ["refund * order|money back"],
        },
        "content": "Check the order, then the refund policy.",
        "tenant_id": "acme",
    }
    return Procedure.model_validate(data | changes)


def vendor_onboarding() -> Procedure:
    [loaded] = load_paths([EXAMPLES / "vendor_onboarding.yaml"]).procedures
    return loaded.value


def test_store_is_idempotent_and_a_change_is_a_new_version(
    store: ProceduralMemoryStore,
) -> None:
    first = store.store(procedure())
    again = store.store(procedure())
    assert first.created
    assert not again.created
    assert again.stored.id == first.stored.id
    assert again.stored.version == 1
    changed = store.store(procedure(content="Check the order, the policy, then the card."))
    assert changed.created
    assert changed.stored.version == 2
    assert changed.stored.id != first.stored.id
    # Importing the first content again is still version 1, not a third version.
    assert store.store(procedure()).stored.id == first.stored.id
    assert [s.version for s in store.list(tenant_id="acme", name="refunds")] == [2, 1]
    # The newest approved version is the active one.
    recalled = store.recall("refunds", tenant_id="acme", agent_id="bot")
    assert recalled is not None
    assert recalled.version == 2


def test_a_declared_version_above_the_newest_is_kept(store: ProceduralMemoryStore) -> None:
    assert store.store(procedure(version=7)).stored.version == 7
    assert store.store(procedure(version=3, content="Other.")).stored.version == 8


def test_admin_written_is_approved_and_learned_starts_pending(
    store: ProceduralMemoryStore,
) -> None:
    admin = store.store(procedure("admin_one")).stored
    learned = store.store(procedure("learned_one", created_by="learned")).stored
    assert admin.status == "approved"
    assert admin.procedure.approved
    assert learned.status == "pending"
    assert not learned.procedure.approved
    assert store.recall("learned_one", tenant_id="acme", agent_id=None) is None
    assert [s.name for s in store.list(status="pending")] == ["learned_one"]


def test_only_approved_procedures_are_matched_and_approval_activates(
    store: ProceduralMemoryStore, clock: ManualClock
) -> None:
    learned = store.store(procedure(created_by="learned")).stored
    task = "I want a refund for my order"
    assert store.find_match(task, tenant_id="acme", agent_id="bot") is None
    approved = store.approve(learned.id, tenant_id="acme", by="slack:U1")
    assert approved.status == "approved"
    assert approved.decided_by == "slack:U1"
    assert approved.decided_at == clock()
    found = store.find_match(task, tenant_id="acme", agent_id="bot")
    assert found is not None
    assert found.stored.id == learned.id
    # Approving again is a no-op (a second click), not a new decision.
    clock.advance(60)
    assert store.approve(learned.id, by="someone-else").decided_by == "slack:U1"
    rejected = store.reject(learned.id, tenant_id="acme")
    assert rejected.status == "rejected"
    assert not rejected.procedure.approved
    assert store.find_match(task, tenant_id="acme", agent_id="bot") is None
    assert store.recall("refunds", tenant_id="acme", agent_id="bot") is None


def test_a_pending_newer_version_leaves_the_approved_one_active(
    store: ProceduralMemoryStore,
) -> None:
    store.store(procedure())
    pending = store.store(procedure(content="New steps.", approved=False)).stored
    assert pending.version == 2
    assert pending.status == "pending"
    active = store.recall("refunds", tenant_id="acme", agent_id="bot")
    assert active is not None
    assert active.version == 1
    store.approve(pending.id)
    active = store.recall("refunds", tenant_id="acme", agent_id="bot")
    assert active is not None
    assert active.version == 2


def test_another_tenants_procedure_is_never_matched_nor_decided(
    store: ProceduralMemoryStore,
) -> None:
    theirs = store.store(procedure(tenant_id="globex", created_by="learned")).stored
    task = "refund my order please"
    assert store.find_match(task, tenant_id="acme", agent_id="bot") is None
    assert store.recall("refunds", tenant_id="acme", agent_id="bot") is None
    assert store.list(tenant_id="acme") == []
    with pytest.raises(ProcedureNotFound):
        store.approve(theirs.id, tenant_id="acme")
    with pytest.raises(ProcedureNotFound):
        store.delete(theirs.id, tenant_id="acme")
    assert store.get(theirs.id) is not None
    store.approve(theirs.id, tenant_id="globex")
    assert store.find_match(task, tenant_id="globex", agent_id="bot") is not None
    assert store.find_match(task, tenant_id="acme", agent_id="bot") is None


def test_agent_scope_and_shared_procedures(store: ProceduralMemoryStore) -> None:
    store.store(procedure("private_refunds", agent_id="billing-bot"))
    store.store(
        procedure(
            "shared_returns",
            agent_id="billing-bot",
            shared=True,
            trigger={"description": "Returns.", "patterns": ["return * parcel"]},
        )
    )
    for agent in ("billing-bot", "sales-bot", "support-bot"):
        found = store.find_match("I need to return a parcel", tenant_id="acme", agent_id=agent)
        assert found is not None, agent
        assert found.stored.name == "shared_returns", agent
    mine = store.find_match("refund my order", tenant_id="acme", agent_id="billing-bot")
    assert mine is not None
    assert mine.stored.name == "private_refunds"
    assert store.find_match("refund my order", tenant_id="acme", agent_id="sales-bot") is None
    assert {s.name for s in store.list(tenant_id="acme", agent_id="sales-bot")} == {
        "shared_returns"
    }
    # The shared one is not visible to another tenant's agents either.
    assert (
        store.find_match("I need to return a parcel", tenant_id="globex", agent_id="sales-bot")
        is None
    )


def test_an_agents_own_version_overrides_the_tenant_wide_one(
    store: ProceduralMemoryStore,
) -> None:
    store.store(procedure())
    store.store(procedure(agent_id="vip-bot", content="VIP customers get refunds at once."))
    vip = store.recall("refunds", tenant_id="acme", agent_id="vip-bot")
    other = store.recall("refunds", tenant_id="acme", agent_id="bot")
    assert vip is not None
    assert vip.procedure.agent_id == "vip-bot"
    assert other is not None
    assert other.procedure.agent_id is None


def test_seed_vendor_onboarding_matches_by_pattern(store: ProceduralMemoryStore) -> None:
    store.store(vendor_onboarding())
    found = store.find_match(
        "Onboard the new vendor TechCorp", tenant_id="globex", agent_id="procurement-assistant"
    )
    assert found is not None
    assert found.stored.name == "vendor_onboarding"
    assert found.match.path == "pattern"
    assert found.match.pattern == "onboard * vendor"
    assert "'onboard * vendor'" in found.match.reason
    # The procedure is the procurement assistant's own and not shared.
    assert (
        store.find_match("Onboard the new vendor TechCorp", tenant_id="globex", agent_id="other")
        is None
    )


def test_description_decides_when_no_pattern_matches(store: ProceduralMemoryStore) -> None:
    store.store(
        procedure(
            "escalations",
            trigger={"description": "A customer wants to escalate a complaint to a manager."},
        )
    )
    found = store.find_match(
        "Escalate this complaint to a manager", tenant_id="acme", agent_id=None
    )
    assert found is not None
    assert found.match.path == "description"
    assert "escalat" in found.match.shared_words
    assert "manager" in found.match.shared_words
    assert store.find_match("What's the weather", tenant_id="acme", agent_id=None) is None


def test_support_is_recorded_once_per_conversation(store: ProceduralMemoryStore) -> None:
    candidate = store.store(procedure(created_by="learned"), support=["c-1"]).stored
    assert candidate.support == ("c-1",)
    again = store.store(procedure(created_by="learned"), support=["c-2", "c-1"])
    assert not again.created
    assert again.stored.support == ("c-1", "c-2")
    assert store.add_support(candidate.id, ["c-3", "c-3"]).support == ("c-1", "c-2", "c-3")
    with pytest.raises(ProcedureNotFound):
        store.add_support("proc_missing", ["c-9"])


def test_delete_removes_one_version_and_its_support(store: ProceduralMemoryStore) -> None:
    first = store.store(procedure(), support=["c-1"]).stored
    second = store.store(procedure(content="Changed.")).stored
    removed = store.delete(second.id)
    assert removed.id == second.id
    assert store.get(second.id) is None
    active = store.recall("refunds", tenant_id="acme", agent_id=None)
    assert active is not None
    assert active.id == first.id
    with pytest.raises(ProcedureNotFound):
        store.delete(second.id)


def test_the_every_tenant_procedure_is_visible_to_all_but_decided_by_none(
    store: ProceduralMemoryStore,
) -> None:
    common = store.store(procedure(tenant_id=None, created_by="learned")).stored
    with pytest.raises(ProcedureNotFound):
        store.approve(common.id, tenant_id="acme")
    store.approve(common.id)
    for tenant in ("acme", "globex"):
        assert store.recall("refunds", tenant_id=tenant, agent_id=None) is not None


def test_concurrent_stores_of_the_same_content_make_one_version(
    store: ProceduralMemoryStore,
) -> None:
    """Several processes importing the same new file at once (a fleet starting up): one version,
    every caller gets it, and exactly one of them created it."""
    from concurrent.futures import ThreadPoolExecutor

    candidate = procedure(created_by="learned")
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda n: store.store(candidate, support=[f"c-{n}"]), range(8)))
    assert {o.stored.id for o in outcomes} == {outcomes[0].stored.id}
    assert sum(o.created for o in outcomes) == 1
    [stored] = store.list(name="refunds")
    assert sorted(stored.support) == sorted(f"c-{n}" for n in range(8))
