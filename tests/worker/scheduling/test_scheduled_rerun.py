"""A schedule's rerun: the beat starts a rerun job over the window relative to the slot (not to
when it fires), runs it, and firing the same slot again finds that job instead of a second."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from schemas.schedule import ScheduleSpec
from tests.worker.scheduling.helpers import conversation, job_runner
from worker.catalog import Catalog
from worker.ledger import Ledger, ManualClock, RunPlan
from worker.ledger.schedules import ScheduleLedger
from worker.scheduling import job_summary
from worker.scheduling.actions import ScheduleActions, rerun_starter
from worker.scheduling.beat import Beat

SLOT = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
NIGHTLY = ScheduleSpec.model_validate(
    {
        "name": "nightly_follow_ups",
        "cron": "0 2 * * *",
        "rerun": {"analyzer": "follow_ups", "tenant": "acme", "since": {"days": 1}},
    }
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(SLOT - timedelta(days=2))


def store(ledger: Ledger, clock: ManualClock, when: datetime, indexes: range) -> None:
    clock.set(when)
    for index in indexes:
        ref = ledger.save_conversation(conversation(index))
        ledger.record_runs(
            ref.pk, [RunPlan("follow_ups", "1.0.0", skip_reason="old")], trigger="cli"
        )


def test_a_scheduled_rerun_selects_the_day_before_its_slot_and_runs_once(
    ledger: Ledger, clock: ManualClock, catalog: Catalog
) -> None:
    store(ledger, clock, SLOT - timedelta(days=2), range(4))  # before the window
    store(ledger, clock, SLOT - timedelta(hours=5), range(10, 16))  # in it: acme are even
    store(ledger, clock, SLOT + timedelta(minutes=1), range(20, 24))  # after the slot
    executed: list[str] = []

    def execute(job_id: str) -> None:
        executed.append(job_id)
        asyncio.run(job_runner(ledger, catalog).run(job_id))

    start = rerun_starter(ledger, catalog, default_model="claude-sonnet-5-5", execute=execute)
    beat = Beat(
        [NIGHTLY],
        ScheduleLedger(ledger.engine, now=clock),
        ScheduleActions(
            ledger, catalog, enqueue=lambda _ids: None, max_attempts=3, start_rerun=start
        ),
        owner="beat-a",
    )
    # The beat fires ten minutes late: the window still ends at the slot.
    clock.set(SLOT + timedelta(minutes=10))
    report = beat.tick()
    assert report.fired == [("nightly_follow_ups", SLOT)]
    [firing] = ScheduleLedger(ledger.engine, now=clock).firings()
    assert firing.status == "fired"
    job_id = firing.detail["job_id"]
    assert executed == [job_id]
    summary = job_summary(ledger, job_id)
    assert summary.status == "done"
    assert summary.selected == 3, "acme's conversations 10, 12 and 14 only"
    assert summary.recorded == summary.succeeded == 3
    # A beat that adopts this firing (its first beat died after starting the job) gets the
    # same job back; the job, finished, runs nothing again.
    again = start(NIGHTLY, NIGHTLY.rerun, SLOT)  # type: ignore[arg-type]
    assert again == {"job_id": job_id, "created": False}
    assert job_summary(ledger, job_id).recorded == 3
    assert beat.tick().fired == []
