"""Conversations: stored once per (tenant, id), replaced only when the transcript changed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from tests.worker.ledger.conftest import make_conversation
from worker.ledger import ConversationNotFound, Ledger, ManualClock
from worker.ledger.tables import conversations


def test_a_new_conversation_is_created_and_reads_back_equal(ledger: Ledger) -> None:
    conversation = make_conversation()
    ref = ledger.save_conversation(conversation)
    assert (ref.created, ref.changed) == (True, True)
    assert (ref.tenant_id, ref.conversation_id) == ("acme", "c-1")
    assert ledger.get_conversation(ref) == conversation
    assert ledger.get_conversation(ref.pk) == conversation


def test_the_hash_is_the_one_results_carry_in_their_provenance(ledger: Ledger) -> None:
    conversation = make_conversation()
    ref = ledger.save_conversation(conversation)
    assert ref.transcript_hash == conversation.content_hash()


def test_saving_the_same_conversation_again_changes_nothing(
    ledger: Ledger, clock: ManualClock
) -> None:
    first = ledger.save_conversation(make_conversation())
    clock.advance(60)
    again = ledger.save_conversation(make_conversation())
    assert again.pk == first.pk
    assert (again.created, again.changed) == (False, False)
    with ledger.engine.connect() as connection:
        row = connection.execute(sa.select(conversations)).one()
    assert row.updated_at == row.received_at


def test_a_changed_transcript_replaces_the_stored_one(ledger: Ledger, clock: ManualClock) -> None:
    received = clock()
    first = ledger.save_conversation(make_conversation())
    clock.advance(60)
    longer = make_conversation(turns=[{"role": "user", "text": "Also, cancel my plan."}])
    again = ledger.save_conversation(longer)
    assert again.pk == first.pk
    assert (again.created, again.changed) == (False, True)
    assert again.transcript_hash != first.transcript_hash
    assert ledger.get_conversation(first.pk) == longer
    with ledger.engine.connect() as connection:
        row = connection.execute(sa.select(conversations)).one()
    assert row.received_at == received
    assert row.updated_at == clock()


def test_the_same_conversation_id_in_another_tenant_is_another_conversation(
    ledger: Ledger,
) -> None:
    ours = ledger.save_conversation(make_conversation())
    theirs = ledger.save_conversation(make_conversation(tenant_id="globex"))
    assert theirs.pk != ours.pk
    assert theirs.created


def test_an_unknown_conversation_is_reported_by_its_pk(ledger: Ledger) -> None:
    with pytest.raises(ConversationNotFound, match="pk 4242"):
        ledger.get_conversation(4242)


def test_concurrent_saves_store_the_conversation_once(ledger: Ledger) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        refs = list(pool.map(lambda _: ledger.save_conversation(make_conversation()), range(8)))
    assert len({ref.pk for ref in refs}) == 1
    assert sum(ref.created for ref in refs) == 1
