"""The sweeper with the broker's queue depth: a message that merely waits in a long queue is
not sent again; one the queue can no longer hold is, once per interval; every send is counted."""

from __future__ import annotations

import sqlalchemy as sa

from tests.worker.ledger.conftest import QueueRun
from worker.ledger import Ledger, ManualClock
from worker.ledger.tables import analysis_runs

STALE = 300


def enqueue_counts(ledger: Ledger, run_ids: list[str]) -> list[int]:
    with ledger.engine.connect() as connection:
        found = dict(
            connection.execute(
                sa.select(analysis_runs.c.id, analysis_runs.c.enqueue_count).where(
                    analysis_runs.c.id.in_(run_ids)
                )
            ).all()
        )
    return [found[run_id] for run_id in run_ids]


def backlog(ledger: Ledger, clock: ManualClock, queue_run: QueueRun, count: int) -> list[str]:
    """`count` queued runs, each sent once, one second apart (oldest first)."""
    ids = []
    for _ in range(count):
        run_id = queue_run()
        ledger.mark_enqueued([run_id])
        ids.append(run_id)
        clock.advance(1)
    return ids


def test_a_backlog_that_the_queue_still_holds_is_not_sent_again(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    ids = backlog(ledger, clock, queue_run, 10)
    clock.advance(STALE * 5)
    for _ in range(5):  # however often the sweeper runs while the backlog waits
        assert ledger.sweep(older_than_seconds=STALE, waiting_messages=10).to_enqueue == []
        clock.advance(STALE)
    assert enqueue_counts(ledger, ids) == [1] * 10


def test_only_the_messages_the_queue_lost_are_sent_again_oldest_first(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    ids = backlog(ledger, clock, queue_run, 10)
    clock.advance(STALE)
    # FIFO: the 7 messages left are the newest 7 runs'; the 3 oldest lost theirs.
    report = ledger.sweep(older_than_seconds=STALE, waiting_messages=7)
    assert report.to_enqueue == ids[:3]
    ledger.mark_enqueued(report.to_enqueue)
    assert enqueue_counts(ledger, ids) == [2, 2, 2] + [1] * 7
    # Re-sent just now: not again within the interval, even when the queue has lost everything.
    clock.advance(STALE - 1)
    assert set(ledger.sweep(older_than_seconds=STALE, waiting_messages=0).to_enqueue) == set(
        ids[3:]
    )


def test_an_empty_queue_means_every_waiting_run_lost_its_message(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    ids = backlog(ledger, clock, queue_run, 4)
    clock.advance(STALE)
    assert sorted(ledger.sweep(older_than_seconds=STALE, waiting_messages=0).to_enqueue) == sorted(
        ids
    )


def test_more_messages_than_queued_runs_resends_nothing(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    backlog(ledger, clock, queue_run, 3)
    clock.advance(STALE)
    assert ledger.sweep(older_than_seconds=STALE, waiting_messages=50).to_enqueue == []


def test_an_unknown_depth_sends_only_takeovers(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    """During a broker outage the depth is unknown: a dead worker's run is still listed (its
    lease says so), queued runs wait for a sweep that can see the queue."""
    forgotten = backlog(ledger, clock, queue_run, 2)
    leased = queue_run()
    ledger.claim(leased, "w1", 60)
    clock.advance(STALE)
    report = ledger.sweep(older_than_seconds=STALE, resend_queued=False)
    assert report.to_enqueue == [leased]
    assert set(ledger.sweep(older_than_seconds=STALE).to_enqueue) == set(forgotten)


def test_a_run_never_sent_counts_from_its_creation(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    """Runs recorded before enqueue tracking (or by a path that does not record) are ordered
    by when they were created."""
    old = queue_run()
    clock.advance(10)
    new = queue_run()
    clock.advance(STALE)
    assert ledger.sweep(older_than_seconds=STALE, waiting_messages=1).to_enqueue == [old]
    assert enqueue_counts(ledger, [old, new]) == [0, 0]


def test_a_takeover_waiting_in_the_queue_is_not_sent_again(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    """A dead worker's run is sent once to the takeover queue; while the queues still hold that
    message (a busy fleet), later sweeps leave it; once they do not, it is sent again."""
    [dead] = backlog(ledger, clock, queue_run, 1)
    ledger.claim(dead, "w1", 60)
    clock.advance(60)
    assert ledger.sweep(older_than_seconds=STALE, waiting_messages=0).to_enqueue == [dead]
    ledger.mark_enqueued([dead])
    clock.advance(STALE * 3)
    assert ledger.sweep(older_than_seconds=STALE, waiting_messages=1).to_enqueue == []
    assert ledger.sweep(older_than_seconds=STALE, waiting_messages=0).to_enqueue == [dead]
    assert enqueue_counts(ledger, [dead]) == [2]
