"""The effects table behind `LedgerEffectStore`, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
import sqlalchemy as sa

from analyzers.tools.effects import EffectRecord
from tests.worker.ledger.conftest import QueueRun
from worker.ledger import Ledger, LedgerError
from worker.ledger.effects import LedgerEffectStore


def pending(run_id: str, key: str = "posthoc-abc", fingerprint: str = "f" * 64) -> EffectRecord:
    return EffectRecord(
        key=key,
        run_id=run_id,
        tool_name="ticket_upsert",
        scope="procedure:escalation_ticket:step:3",
        call_number=1,
        method="POST",
        url="https://crm.acme.example/api/v2/tickets",
        fingerprint=fingerprint,
    )


def test_an_effect_goes_from_pending_to_done_with_its_outcome(
    ledger: Ledger, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    store = LedgerEffectStore(ledger.engine)

    async def go() -> tuple[EffectRecord | None, EffectRecord, EffectRecord | None]:
        before = await store.lookup("posthoc-abc")
        stored = await store.record_pending(pending(run_id))
        # A NUL and non-ASCII text in a response: kept as they were (JSONB would refuse a NUL).
        output = {"ticket_id": "T-1", "note": "caf\u00e9 \u0000 end", "n": [1, 2.5, None]}
        await store.record_outcome("posthoc-abc", output=output, is_error=False, status_code=201)
        return before, stored, await store.lookup("posthoc-abc")

    before, stored, after = asyncio.run(go())

    assert before is None
    assert stored == replace(pending(run_id), state="pending", sends=1)
    assert after == replace(
        pending(run_id),
        state="done",
        output={"ticket_id": "T-1", "note": "caf\u00e9 \u0000 end", "n": [1, 2.5, None]},
        status_code=201,
    )
    assert store.for_run(run_id) == [after]


def test_a_pending_effect_sent_again_counts_its_sends(ledger: Ledger, queue_run: QueueRun) -> None:
    run_id = queue_run()
    store = LedgerEffectStore(ledger.engine)

    async def go() -> EffectRecord:
        await store.record_pending(pending(run_id))
        return await store.record_pending(pending(run_id))

    again = asyncio.run(go())

    assert (again.state, again.sends) == ("pending", 2)
    assert store.lookup_now("posthoc-abc") == again


def test_a_done_effect_is_never_sent_again(ledger: Ledger, queue_run: QueueRun) -> None:
    run_id = queue_run()
    store = LedgerEffectStore(ledger.engine)

    async def go() -> None:
        await store.record_pending(pending(run_id))
        await store.record_outcome("posthoc-abc", output="ok", is_error=False, status_code=200)
        await store.record_pending(pending(run_id))

    with pytest.raises(LedgerError, match="already done"):
        asyncio.run(go())
    assert store.lookup_now("posthoc-abc") == replace(
        pending(run_id), state="done", output="ok", status_code=200
    )


def test_an_outcome_needs_its_pending_record(ledger: Ledger) -> None:
    store = LedgerEffectStore(ledger.engine)
    with pytest.raises(LedgerError, match="no pending effect"):
        asyncio.run(store.record_outcome("posthoc-x", output=None, is_error=True, status_code=None))


def test_effects_belong_to_runs_and_are_listed_per_run(ledger: Ledger, queue_run: QueueRun) -> None:
    first, second = queue_run(), queue_run("other")
    store = LedgerEffectStore(ledger.engine)

    async def go() -> None:
        await store.record_pending(pending(first, "posthoc-1"))
        await store.record_pending(pending(second, "posthoc-2"))
        await store.record_pending(pending(first, "posthoc-3"))

    asyncio.run(go())

    assert [record.key for record in store.for_run(first)] == ["posthoc-1", "posthoc-3"]
    assert [record.key for record in store.for_run(second)] == ["posthoc-2"]
    with pytest.raises(sa.exc.IntegrityError):
        asyncio.run(store.record_pending(pending("no-such-run", "posthoc-4")))
