"""The engine's heartbeat: one ledger call renews every lease the process holds; the start
jitter; both on a real SQLite ledger with a gated scripted model."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from analyzers.testing import ScriptedModel
from tests.worker.test_engine import (
    GatedModel,
    catalog,  # noqa: F401 - fixture
    make_engine,
    queue_run,
    recording_turns,
)
from worker.catalog import Catalog
from worker.engine.runner import ProcessOutcome
from worker.ledger import Ledger


def test_one_heartbeat_renews_the_leases_of_every_run_in_flight(
    ledger: Ledger,
    catalog: Catalog,  # noqa: F811 - fixture
) -> None:
    run_ids = [queue_run(ledger, conversation_id=f"c-{index}") for index in range(3)]
    model = GatedModel(ScriptedModel(recording_turns() * 3))
    engine = make_engine(ledger, catalog, model, heartbeat_seconds=0.05)
    calls: list[list[tuple[str, str, int]]] = []
    renew = ledger.renew_leases

    def counting(held: Sequence[tuple[str, str, int]], lease_seconds: float) -> set[str]:
        calls.append(list(held))
        return renew(held, lease_seconds)

    ledger.renew_leases = counting  # type: ignore[method-assign]

    async def scenario() -> list[ProcessOutcome]:
        running = [asyncio.create_task(engine.process(run_id)) for run_id in run_ids]
        while not any(len(held) == 3 for held in calls):
            await asyncio.sleep(0.01)
        assert engine.leases.held == 3
        model.gate.set()
        return await asyncio.gather(*running)

    outcomes = asyncio.run(asyncio.wait_for(scenario(), timeout=20))

    assert outcomes == [ProcessOutcome("succeeded")] * 3
    full = next(held for held in calls if len(held) == 3)
    assert sorted(run_id for run_id, _, _ in full) == sorted(run_ids)
    assert all(worker_id == f"host:1:{run_id}" for run_id, worker_id, _ in full)
    assert engine.leases.held == 0
    for run_id in run_ids:
        assert ledger.get_run(run_id).lease_owner is None


def test_a_run_starts_after_a_random_part_of_the_start_jitter(
    ledger: Ledger,
    catalog: Catalog,  # noqa: F811 - fixture
) -> None:
    engine = make_engine(ledger, catalog, ScriptedModel([]), jitter=0.5)
    assert engine.start_delay() == 0.0  # off unless configured (tests, `posthoc run`)
    engine.config = dataclasses.replace(engine.config, start_jitter_seconds=0.4)
    assert engine.start_delay() == 0.2
