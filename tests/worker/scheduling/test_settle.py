"""`trigger.settle_seconds`: a run waits out the delay after the conversation's last update, and
three updates within the window give one run, on the last version."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas import AnalyzerSpec
from worker.catalog import Catalog
from worker.engine.service import WorkerService
from worker.intake import record
from worker.ledger import Ledger, ManualClock
from worker.settings import Settings

from .helpers import PolicyModel, conversation

SETTLE = 60.0


@pytest.fixture
def catalog() -> Catalog:
    spec = Catalog.load().analyzers["follow_ups"]
    trigger = spec.trigger.model_copy(update={"settle_seconds": SETTLE})
    return Catalog.from_specs(
        [AnalyzerSpec.model_validate(spec.model_copy(update={"trigger": trigger}).model_dump())]
    )


def _turns(count: int) -> list[dict[str, str]]:
    return [
        {"role": "user" if i % 2 == 0 else "agent", "text": f"message {i} about order 1."}
        for i in range(count)
    ]


def test_three_updates_within_the_window_give_one_run_on_the_last(
    ledger: Ledger, catalog: Catalog, clock: ManualClock
) -> None:
    recorded = []
    for update in range(3):
        updated = conversation(1, turns=_turns(2 + update))
        recorded += record(
            ledger,
            catalog,
            [updated],
            analyzers=None,
            trigger="webhook",
            max_attempts=3,
            idempotent=True,
        )
        clock.advance(10)
    # The same content again is the same run, and supersedes nothing.
    again = record(
        ledger,
        catalog,
        [updated],
        analyzers=None,
        trigger="webhook",
        max_attempts=3,
        idempotent=True,
    )
    assert [run.id for _, run in again] == [recorded[-1][1].id]

    runs = [ledger.get_run(run.id) for _, run in recorded]
    assert [run.status for run in runs] == ["skipped", "skipped", "queued"]
    assert all("superseded" in (run.skip_reason or "") for run in runs[:2])
    last = runs[-1]
    assert ledger.claim(last.id, "w", 30) is None  # still settling
    clock.advance(SETTLE - 10 + 1)  # the last update was 10 s ago: 61 s after it
    claimed = ledger.claim(last.id, "w", 30)
    assert claimed is not None
    assert len(ledger.run_conversation(claimed).turns) == 4  # the newest version


def test_an_update_after_the_run_started_is_a_new_run(
    ledger: Ledger, catalog: Catalog, clock: ManualClock
) -> None:
    [(_, first)] = record(
        ledger,
        catalog,
        [conversation(2, turns=_turns(2))],
        analyzers=None,
        trigger="webhook",
        max_attempts=3,
        idempotent=True,
    )
    clock.advance(SETTLE + 1)
    assert ledger.claim(first.id, "w", 30) is not None
    [(_, second)] = record(
        ledger,
        catalog,
        [conversation(2, turns=_turns(3))],
        analyzers=None,
        trigger="webhook",
        max_attempts=3,
        idempotent=True,
    )
    assert ledger.get_run(first.id).status == "running"
    assert ledger.get_run(second.id).status == "queued"


def test_the_worker_says_how_long_a_settling_run_still_waits(
    tmp_path: Path, catalog: Catalog
) -> None:
    """A message that reaches the worker before the run is due is a no-op; the worker then
    sends the wake-up for when it is (`seconds_until_due`)."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'worker.sqlite3'}",
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}",
    )
    service = WorkerService(settings, model=PolicyModel(), catalog=catalog)
    try:
        [(_, run)] = record(
            service.ledger,
            catalog,
            [conversation(3)],
            analyzers=None,
            trigger="webhook",
            max_attempts=3,
            idempotent=True,
        )
        assert service.process(run.id).status == "noop"
        wait = service.seconds_until_due(run.id)
        assert wait is not None
        assert SETTLE - 5 < wait <= SETTLE
    finally:
        service.close()


def test_posthoc_run_in_process_does_not_wait_for_the_settle_delay(
    ledger: Ledger, catalog: Catalog
) -> None:
    [(_, run)] = record(
        ledger,
        catalog,
        [conversation(4)],
        analyzers=None,
        trigger="cli",
        max_attempts=3,
        idempotent=False,
        settle=False,
    )
    assert ledger.claim(run.id, "w", 30) is not None
