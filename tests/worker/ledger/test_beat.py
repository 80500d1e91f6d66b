"""Two beats on one ledger over an hour of simulated time (SQLite and PostgreSQL): every slot of
every schedule fires exactly once, also when the leaseholder is killed mid-way (even in the
middle of a firing), and a restarted beat or a beat back from downtime fires nothing twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from analyzers.definitions.schedules import slots_between
from analyzers.errors import ConfigError
from schemas.schedule import ScheduleSpec
from worker.catalog import Catalog
from worker.ledger import Ledger, ManualClock
from worker.ledger.schedules import ScheduleLedger
from worker.ledger.tables import analysis_runs, conversations
from worker.scheduling.actions import ScheduleActions
from worker.scheduling.beat import Beat

LEASE_SECONDS = 90.0
STEP_SECONDS = 30.0


class Killed(BaseException):
    """The beat process dies here (SIGKILL): nothing after this line runs in it."""


def schedules(grace_minutes: int = 60) -> list[ScheduleSpec]:
    digest = {"analyzer": "daily_digest", "tenant": "acme", "since": {"hours": 24}}
    return [
        ScheduleSpec.model_validate(
            {
                "name": "every_two_minutes",
                "interval": {"minutes": 2},
                "standalone": digest,
                "missed_grace": {"minutes": grace_minutes},
            }
        ),
        ScheduleSpec.model_validate(
            {
                "name": "every_five_paris",
                "cron": "*/5 * * * *",
                "timezone": "Europe/Paris",
                "standalone": digest,
            }
        ),
        ScheduleSpec.model_validate({"name": "hourly", "cron": "0 * * * *", "standalone": digest}),
    ]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


class CountingActions:
    """The real standalone action, counting calls per (schedule, slot); a beat marked to die
    dies right after doing the action, before the firing is marked finished."""

    def __init__(self, inner: ScheduleActions) -> None:
        self.inner = inner
        self.calls: Counter[tuple[str, datetime]] = Counter()
        self.die_after_next = False

    def __call__(self, spec: ScheduleSpec, slot: datetime) -> Any:
        detail = self.inner(spec, slot)
        self.calls[(spec.name, slot)] += 1
        if self.die_after_next:
            raise Killed
        return detail


@pytest.fixture
def world(ledger: Ledger, clock: ManualClock, catalog: Catalog) -> Iterator[dict[str, Any]]:
    sent: list[str] = []
    # A second beat process has its own engine on the same database.
    other = Ledger.from_url(ledger.engine.url, now=clock)
    beats = []
    for name, store in (("beat-a", ledger), ("beat-b", other)):
        actions = CountingActions(
            ScheduleActions(store, catalog, enqueue=sent.extend, max_attempts=3)
        )
        beats.append(
            Beat(
                schedules(),
                ScheduleLedger(store.engine, now=clock),
                actions,
                owner=name,
                lease_seconds=LEASE_SECONDS,
            )
        )
    try:
        yield {"beats": beats, "sent": sent}
    finally:
        other.dispose()


def expected_slots(start: datetime, end: datetime) -> set[tuple[str, datetime]]:
    """Every slot in [start, end]."""
    before = start - timedelta(microseconds=1)
    return {(spec.name, slot) for spec in schedules() for slot in slots_between(spec, before, end)}


def standalone_runs(ledger: Ledger) -> Counter[str]:
    """Runs recorded per selection record (one per schedule and slot)."""
    with ledger.engine.connect() as connection:
        rows = connection.execute(
            sa.select(conversations.c.conversation_id).select_from(
                analysis_runs.join(
                    conversations, conversations.c.id == analysis_runs.c.conversation_pk
                )
            )
        ).all()
    return Counter(row.conversation_id for row in rows)


def run_for(beats: list[Beat], clock: ManualClock, seconds: float, alive: list[bool]) -> None:
    steps = int(seconds // STEP_SECONDS)
    for step in range(steps):
        clock.advance(STEP_SECONDS)
        # Alternate who ticks first, so neither is always the one to win a race.
        order = beats if step % 2 else list(reversed(beats))
        leaders = 0
        for beat in order:
            if alive[beats.index(beat)]:
                try:
                    leaders += beat.tick().leader
                except Killed:
                    alive[beats.index(beat)] = False
        assert leaders <= 1, f"two beats held the lease at {clock().isoformat()}"


def test_two_beats_for_an_hour_fire_every_slot_exactly_once_across_a_kill(
    ledger: Ledger, clock: ManualClock, world: dict[str, Any]
) -> None:
    beats: list[Beat] = world["beats"]
    store = ScheduleLedger(ledger.engine, now=clock)
    start = clock()
    alive = [True, True]
    run_for(beats, clock, 25 * 60, alive)
    holder = store.lease_holder()
    assert holder is not None
    leader = next(i for i, beat in enumerate(beats) if beat.owner == holder.owner)
    # The leaseholder dies in the middle of its next firing: the action is done (a run is
    # recorded) but the firing row still says `firing`.
    leader_actions: CountingActions = beats[leader].fire  # type: ignore[assignment]
    leader_actions.die_after_next = True
    run_for(beats, clock, 35 * 60, alive)
    end = clock()

    assert alive[leader] is False, "the leaseholder was killed mid-way"
    assert store.lease_holder() is not None
    assert store.lease_holder().owner == beats[1 - leader].owner  # type: ignore[union-attr]
    firings = store.firings()
    recorded = Counter((firing.schedule, firing.scheduled_for) for firing in firings)
    expected = expected_slots(start, end)
    assert len(expected) == 31 + 13 + 2, "an hour, both ends included"
    assert set(recorded) == expected, "every slot fired, none invented"
    assert max(recorded.values()) == 1, "no slot recorded twice"
    assert {firing.status for firing in firings} == {"fired"}
    # The effect happened once per slot: one standalone run per (schedule, slot), the one the
    # dead beat recorded reused (not duplicated) by the beat that finished its firing.
    runs = standalone_runs(ledger)
    assert len(runs) == len(expected)
    assert set(runs.values()) == {1}
    adopted = [
        f for f in firings if f.owner == beats[1 - leader].owner and f.detail["created"] is False
    ]
    assert len(adopted) == 1, "exactly the interrupted firing was finished by the survivor"
    assert set(world["sent"]) == {f.detail["run_id"] for f in firings}


def test_a_restarted_beat_fires_nothing_twice_and_after_downtime_only_slots_within_grace(
    ledger: Ledger, clock: ManualClock, world: dict[str, Any], catalog: Catalog
) -> None:
    first: Beat = world["beats"][0]
    first.tick()
    fired_before = ScheduleLedger(ledger.engine, now=clock).firings()
    assert {f.schedule for f in fired_before} >= {"every_two_minutes"}
    first.release()
    # A new process (a new owner) starts at the same moment: nothing is due again.
    restarted = Beat(
        schedules(grace_minutes=10),
        ScheduleLedger(ledger.engine, now=clock),
        ScheduleActions(ledger, catalog, enqueue=world["sent"].extend, max_attempts=3),
        owner="beat-restarted",
        lease_seconds=LEASE_SECONDS,
    )
    report = restarted.tick()
    assert report.leader
    assert report.fired == []
    # Down for three hours: on return, the slots of the last ten minutes (its missed_grace)
    # fire, once each, oldest first; the older ones are skipped.
    clock.advance(3 * 3600 + 30)
    report = restarted.tick()
    now = clock()
    fired = [slot for name, slot in report.fired if name == "every_two_minutes"]
    assert fired == sorted(fired)
    assert fired[-1] == now.replace(minute=now.minute - now.minute % 2, second=0, microsecond=0)
    assert fired[0] == fired[-1] - timedelta(minutes=8), "slots within ten minutes, no older"
    assert len(fired) == 5
    assert [slot for name, slot in report.fired if name == "hourly"] == [
        now.replace(minute=0, second=0, microsecond=0)
    ]
    assert restarted.tick().fired == []


def test_a_beat_without_the_lease_fires_nothing_and_takes_over_when_it_expires(
    ledger: Ledger, clock: ManualClock, world: dict[str, Any]
) -> None:
    first, second = world["beats"]
    assert first.tick().leader
    assert second.tick().leader is False
    clock.advance(LEASE_SECONDS - 1)
    assert second.tick().leader is False, "the lease is still live"
    clock.advance(2)
    assert second.tick().leader, "the first stopped renewing: the second takes over"
    assert first.tick().leader is False
    # A beat that lost the lease without noticing cannot claim a firing.
    store = ScheduleLedger(ledger.engine, now=clock)
    later = clock() + timedelta(days=1)
    assert store.claim_firing("beat-a", "every_two_minutes", later, "standalone") is False
    # The holder claims a slot once; the unique (schedule, slot) refuses it a second time.
    assert store.claim_firing("beat-b", "every_two_minutes", later, "standalone") is True
    assert store.claim_firing("beat-b", "every_two_minutes", later, "standalone") is False


def test_a_passing_error_is_retried_next_tick_and_a_config_error_is_recorded_once(
    ledger: Ledger, clock: ManualClock
) -> None:
    calls: list[str] = []

    def flaky(spec: ScheduleSpec, slot: datetime) -> dict[str, str]:
        calls.append(spec.name)
        if spec.name == "hourly":
            raise ConfigError("standalone.analyzer: 'daily_digest' is not loaded")
        if len(calls) <= 2:
            raise OSError("the database went away")
        return {"done": spec.name}

    store = ScheduleLedger(ledger.engine, now=clock)
    beat = Beat(schedules()[1:], store, flaky, owner="beat-a", lease_seconds=LEASE_SECONDS)
    report = beat.tick()
    assert sorted(name for name, _ in report.failed) == ["every_five_paris", "hourly"]
    assert {f.schedule: f.status for f in store.firings()} == {
        "every_five_paris": "firing",
        "hourly": "failed",
    }
    clock.advance(STEP_SECONDS)
    report = beat.tick()
    assert [name for name, _ in report.finished] == ["every_five_paris"]
    assert {f.schedule: f.status for f in store.firings()} == {
        "every_five_paris": "fired",
        "hourly": "failed",
    }
    [hourly] = store.firings("hourly")
    assert hourly.error == "ConfigError: standalone.analyzer: 'daily_digest' is not loaded"
    assert calls.count("hourly") == 1, "a config error is not tried again"
