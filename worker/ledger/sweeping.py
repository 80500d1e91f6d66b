"""Finding runs whose broker message is lost, for the sweeper to enqueue again.

Every send is recorded on the run (`enqueued_at`, `enqueue_count`). A queued run whose message
merely waits in a long queue must not be sent again (that multiplied a backlog: 1,821 messages
for 285 runs), so when the sweeper knows how many messages its queues hold (`waiting_messages`)
it reasons like a FIFO queue does: the messages still waiting are those of the most recently
enqueued queued runs, so only runs enqueued before the newest `waiting_messages` of them can
have lost theirs. Whatever is uncertain (ties, duplicates, messages of finished runs still in
the queue) makes the sweeper send less, never more; the queue drains, and the next sweep sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.ledger._sql import runs
from worker.ledger.leases import fail_exhausted
from worker.ledger.records import SweepReport

_last_sent = sa.func.coalesce(runs.c.enqueued_at, runs.c.created_at)


def _expired(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(runs.c.status == "running", runs.c.lease_expires_at <= now)


def _stale_queued(now: datetime, older_than_seconds: float) -> sa.ColumnElement[bool]:
    due_since = now - timedelta(seconds=older_than_seconds)
    return sa.and_(runs.c.status == "queued", runs.c.available_at <= due_since)


def expired_leases(connection: Connection, now: datetime, limit: int) -> list[str]:
    """Running runs whose lease has run out, oldest expiry first."""
    query = sa.select(runs.c.id).where(_expired(now))
    return list(connection.execute(query.order_by(runs.c.lease_expires_at).limit(limit)).scalars())


def due_queued(
    connection: Connection, now: datetime, older_than_seconds: float, limit: int
) -> list[str]:
    """Queued runs claimable for at least `older_than_seconds` that nobody has claimed."""
    query = sa.select(runs.c.id).where(_stale_queued(now, older_than_seconds))
    return list(connection.execute(query.order_by(runs.c.available_at).limit(limit)).scalars())


def oldest_waiting_seconds(connection: Connection, now: datetime) -> float:
    """How long the oldest queued run has been due and unclaimed (0 when none waits)."""
    oldest = connection.execute(
        sa.select(sa.func.min(runs.c.available_at)).where(
            runs.c.status == "queued", runs.c.available_at <= now
        )
    ).scalar()
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:  # SQLite hands back naive UTC
        oldest = oldest.replace(tzinfo=now.tzinfo)
    return float(max((now - oldest).total_seconds(), 0.0))


def mark_enqueued(connection: Connection, now: datetime, run_ids: Sequence[str]) -> None:
    """Record that one more message was sent for each of `run_ids`."""
    if run_ids:
        connection.execute(
            sa.update(runs)
            .where(runs.c.id.in_(list(run_ids)))
            .values(enqueued_at=now, enqueue_count=runs.c.enqueue_count + 1)
        )


def _queue_still_holds_after(
    connection: Connection, now: datetime, waiting_messages: int
) -> datetime | None:
    """The send time of the oldest run awaiting a message (queued, or a takeover) whose message
    may still wait in the queue (the `waiting_messages`-th newest); None when every such run
    may still have its message."""
    query = (
        sa.select(_last_sent)
        .where(sa.or_(runs.c.status == "queued", _expired(now)))
        .order_by(_last_sent.desc())
        .offset(waiting_messages - 1)
        .limit(1)
    )
    found: datetime | None = connection.execute(query).scalar_one_or_none()
    return found


def sweep(
    connection: Connection,
    now: datetime,
    *,
    older_than_seconds: float,
    limit: int,
    waiting_messages: int | None = None,
    resend_queued: bool = True,
) -> SweepReport:
    """Fail runs whose lease ran out on their last attempt; list the runs to enqueue again.

    Takeovers (an expired lease with attempts left) come first. Queued runs follow when
    `resend_queued`: claimable for `older_than_seconds`, not swept within that time, and, when
    `waiting_messages` (the broker's depth for the run queues) is given, sent before the
    newest `waiting_messages` queued runs were. Without a depth the time rule alone decides.
    Concurrent sweepers on PostgreSQL skip each other's rows.
    """
    exhausted_ids = connection.execute(
        sa.select(runs.c.id)
        .where(_expired(now), runs.c.attempts >= runs.c.max_attempts)
        .order_by(runs.c.lease_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).scalars()
    exhausted = fail_exhausted(connection, now, list(exhausted_ids))

    resend_before = now - timedelta(seconds=older_than_seconds)
    not_sent_lately = sa.or_(runs.c.swept_at.is_(None), runs.c.swept_at <= resend_before)
    still_held_from = None
    if waiting_messages is not None and waiting_messages > 0:
        still_held_from = _queue_still_holds_after(connection, now, waiting_messages)
    # A takeover is sent once (a claim clears `swept_at`); again only when its message is not
    # among those the queues still hold.
    takeover_lost: sa.ColumnElement[bool] = runs.c.swept_at.is_(None)
    if waiting_messages is None or waiting_messages == 0:
        takeover_lost = sa.or_(takeover_lost, not_sent_lately)
    elif still_held_from is not None:
        takeover_lost = sa.or_(
            takeover_lost, sa.and_(not_sent_lately, still_held_from > _last_sent)
        )
    takeovers = connection.execute(
        sa.select(runs.c.id)
        .where(_expired(now), runs.c.attempts < runs.c.max_attempts, takeover_lost)
        .order_by(runs.c.lease_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).scalars()
    to_enqueue = list(takeovers)
    reclaimed = len(exhausted) + len(to_enqueue)
    lost: list[sa.ColumnElement[bool]] = [
        _stale_queued(now, older_than_seconds),
        not_sent_lately,
        _last_sent <= resend_before,
    ]
    if waiting_messages is not None and waiting_messages > 0:
        if still_held_from is None:
            resend_queued = False  # fewer queued runs than waiting messages: none is lost
        else:
            lost.append(_last_sent < still_held_from)
    if resend_queued and len(to_enqueue) < limit:
        stale = connection.execute(
            sa.select(runs.c.id)
            .where(*lost)
            .order_by(runs.c.available_at)
            .limit(limit - len(to_enqueue))
            .with_for_update(skip_locked=True)
        ).scalars()
        to_enqueue += stale
    if to_enqueue:
        connection.execute(sa.update(runs).where(runs.c.id.in_(to_enqueue)).values(swept_at=now))
    return SweepReport(exhausted=exhausted, to_enqueue=to_enqueue, reclaimed=reclaimed)
