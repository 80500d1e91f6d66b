"""Conversation versions (append-only) and analyzer snapshots (content-addressed), on SQLite and
PostgreSQL: what a run is pinned to, stored once, read back exactly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from analyzers.runtime.snapshot import build_snapshot
from schemas import AnalyzerSnapshot, AnalyzerSpec
from tests.worker.ledger.conftest import make_conversation
from worker.ledger import (
    ConversationNotFound,
    Ledger,
    LedgerError,
    ManualClock,
    RunPlan,
    SnapshotNotFound,
)
from worker.ledger.migrate import upgrade
from worker.ledger.tables import (
    analysis_runs,
    analyzer_snapshots,
    conversation_versions,
    conversations,
)

SPEC = AnalyzerSpec.model_validate(
    {
        "name": "refund_review",
        "version": "3",
        "description": "Refund decisions.",
        "instructions": "Decide whether the refund was right.",
        "outputs": [
            {
                "name": "refund_decision",
                "description": "approve or deny",
                "schema": {"type": "string", "enum": ["approve", "deny"]},
            }
        ],
    }
)


def snapshot() -> AnalyzerSnapshot:
    return build_snapshot(SPEC, make_conversation(), [])


def test_new_content_is_a_new_version_and_old_content_keeps_its_number(
    ledger: Ledger, clock: ManualClock
) -> None:
    a = make_conversation()
    b = make_conversation(turns=[{"role": "user", "text": "Where is my parcel?"}])
    first = ledger.save_conversation(a)
    clock.advance(10)
    second = ledger.save_conversation(b)
    clock.advance(10)
    again = ledger.save_conversation(a)

    assert (first.version, second.version, again.version) == (1, 2, 1)
    assert first.version_id == again.version_id != second.version_id
    assert (first.changed, second.changed, again.changed) == (True, True, True)
    assert ledger.save_conversation(a).changed is False  # the same content as now
    assert ledger.get_conversation(first.pk) == a  # current: the content received last
    assert ledger.get_conversation_version(second.version_id) == b
    assert ledger.get_conversation(second) == b  # a ref reads the version it was saved as
    versions = ledger.conversation_versions(first.pk)
    assert [(v.version, v.content_hash) for v in versions] == [
        (1, a.content_hash()),
        (2, b.content_hash()),
    ]
    assert versions[1].received_at > versions[0].received_at


def test_runs_are_pinned_to_the_version_they_were_recorded_for(ledger: Ledger) -> None:
    first = ledger.save_conversation(make_conversation())
    [run] = ledger.record_runs(first.pk, [RunPlan("refund_review", "1")], trigger="cli")
    changed = make_conversation(turns=[{"role": "user", "text": "Cancel it all."}])
    second = ledger.save_conversation(changed)
    [later] = ledger.record_runs(second.pk, [RunPlan("refund_review", "1")], trigger="cli")

    assert run.conversation_version_id == first.version_id
    assert later.conversation_version_id == second.version_id
    assert ledger.run_conversation(ledger.get_run(run.id)) == make_conversation()
    assert ledger.run_conversation(ledger.get_run(later.id)) == changed
    claimed = ledger.claim(run.id, "w:1", 30)
    assert claimed is not None
    assert claimed.conversation_version_id == first.version_id


def test_a_version_of_another_conversation_is_refused(ledger: Ledger) -> None:
    mine = ledger.save_conversation(make_conversation("c-1"))
    theirs = ledger.save_conversation(make_conversation("c-2"))
    with pytest.raises(LedgerError, match=r"version \d+ is not a version of conversation pk"):
        ledger.record_runs(
            mine.pk,
            [RunPlan("refund_review", "1")],
            trigger="cli",
            conversation_version_id=theirs.version_id,
        )
    assert ledger.list_runs() == []
    with pytest.raises(ConversationNotFound, match="conversation version with pk 999"):
        ledger.get_conversation_version(999)


def test_concurrent_saves_of_different_contents_get_distinct_versions(ledger: Ledger) -> None:
    contents = [
        make_conversation(turns=[{"role": "user", "text": f"Message number {n}."}])
        for n in range(6)
    ]
    with ThreadPoolExecutor(max_workers=6) as pool:
        refs = list(pool.map(ledger.save_conversation, contents * 2))
    assert len({ref.pk for ref in refs}) == 1
    by_content = {ref.transcript_hash: ref.version for ref in refs}
    assert sorted(by_content.values()) == [1, 2, 3, 4, 5, 6]
    for ref in refs:  # the same content always got the same version
        assert by_content[ref.transcript_hash] == ref.version


def test_a_snapshot_is_stored_once_and_reads_back_with_the_same_hash(ledger: Ledger) -> None:
    ref = ledger.save_conversation(make_conversation())
    plan = RunPlan("refund_review", "3", snapshot=snapshot())
    runs = ledger.record_runs(ref.pk, [plan], trigger="cli")
    runs += ledger.record_runs(ref.pk, [plan], trigger="cli")

    expected = snapshot().spec_hash()
    assert [run.spec_hash for run in runs] == [expected, expected]
    with ledger.engine.connect() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(analyzer_snapshots))
        assert count.scalar_one() == 1
    stored = ledger.get_snapshot(expected)
    assert stored == snapshot()
    assert stored.spec_hash() == expected  # canonical JSON survives JSONB's key reordering
    assert ledger.save_snapshot(stored) == expected
    with pytest.raises(SnapshotNotFound, match="'nope'"):
        ledger.get_snapshot("nope")


def test_a_plan_whose_snapshot_is_of_another_analyzer_is_refused() -> None:
    with pytest.raises(ValueError, match=r"snapshot of refund_review@3 was planned for other@3"):
        RunPlan("other", "3", snapshot=snapshot())


def test_two_versions_of_one_analyzer_planned_together_get_their_own_keys(
    ledger: Ledger,
) -> None:
    ref = ledger.save_conversation(make_conversation())
    plans = [RunPlan("refund_review", "1"), RunPlan("refund_review", "2")]
    runs = ledger.record_runs(ref.pk, plans, trigger="cli", idempotency_prefix="p")
    assert [run.idempotency_key for run in runs] == ["p:refund_review@1", "p:refund_review@2"]
    again = ledger.record_runs(ref.pk, plans, trigger="cli", idempotency_prefix="p")
    assert [run.id for run in again] == [run.id for run in runs]
    assert not any(run.created for run in again)


def test_upgrading_a_ledger_with_data_makes_each_conversation_its_version_one(
    empty_database_url: str, clock: ManualClock
) -> None:
    """Revision 0002 on a ledger at 0001 that holds a conversation and a queued run."""
    conversation = make_conversation()
    with Ledger.from_url(empty_database_url, now=clock) as ledger:
        with ledger.engine.begin() as connection:
            upgrade(connection, "0001")
            pk = connection.execute(
                sa.insert(conversations)
                .values(
                    tenant_id="acme",
                    conversation_id="c-1",
                    payload=conversation.model_dump(mode="json"),
                    transcript_hash=conversation.content_hash(),
                    received_at=clock(),
                    updated_at=clock(),
                )
                .returning(conversations.c.id)
            ).scalar_one()
            connection.execute(
                sa.text(
                    "INSERT INTO analysis_runs (id, conversation_pk, analyzer, analyzer_version, "
                    "status, trigger, attempts, max_attempts, attempt_budget, available_at, "
                    "created_at) VALUES ('r-old', :pk, 'refund_review', '1', 'queued', 'cli', "
                    "0, 3, 3, :at, :at)"
                ).bindparams(sa.bindparam("at", type_=analysis_runs.c.created_at.type)),
                {"pk": pk, "at": clock()},
            )
        ledger.migrate()
        ref = ledger.save_conversation(conversation)
        assert (ref.pk, ref.created, ref.changed, ref.version) == (pk, False, False, 1)
        with ledger.engine.connect() as connection:
            count = connection.execute(
                sa.select(sa.func.count()).select_from(conversation_versions)
            ).scalar_one()
        assert count == 1
        old = ledger.get_run("r-old")
        assert old.conversation_version_id == ref.version_id
        assert old.spec_hash is None
        assert ledger.run_conversation(old) == conversation


def test_recording_is_all_or_nothing_snapshots_included(ledger: Ledger) -> None:
    """A refusal half-way through `record_runs` (an idempotency key that belongs to another
    conversation) leaves no run and no snapshot of that call behind."""
    other = ledger.save_conversation(make_conversation("c-other"))
    ledger.record_runs(
        other.pk, [RunPlan("refund_review", "1")], trigger="cli", idempotency_prefix="p"
    )
    mine = ledger.save_conversation(make_conversation("c-mine"))
    plans = [
        RunPlan("refund_review", "3", snapshot=snapshot()),
        RunPlan("zeta", "1"),
    ]
    # "p:refund_review" is taken by the other conversation's run: refused at the first plan.
    with pytest.raises(LedgerError, match="already belongs to run"):
        ledger.record_runs(mine.pk, plans, trigger="cli", idempotency_prefix="p")
    assert ledger.list_runs(conversation_pk=mine.pk) == []
    with pytest.raises(SnapshotNotFound):
        ledger.get_snapshot(snapshot().spec_hash())
