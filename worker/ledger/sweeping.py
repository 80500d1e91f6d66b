"""Finding runs whose broker message may be lost, for the sweeper to enqueue again."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.ledger._sql import runs
from worker.ledger.leases import fail_exhausted
from worker.ledger.records import SweepReport


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


def sweep(
    connection: Connection, now: datetime, *, older_than_seconds: float, limit: int
) -> SweepReport:
    """Fail runs whose lease ran out on their last attempt; list the runs to enqueue again.

    A run is listed at most once per `older_than_seconds`, however long it then waits in a busy
    queue, so a backlog is not multiplied by the sweeper. Concurrent sweepers on PostgreSQL skip
    each other's rows.
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
    takeovers = connection.execute(
        sa.select(runs.c.id)
        .where(_expired(now), runs.c.attempts < runs.c.max_attempts, not_sent_lately)
        .order_by(runs.c.lease_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).scalars()
    to_enqueue = list(takeovers)
    if len(to_enqueue) < limit:
        stale = connection.execute(
            sa.select(runs.c.id)
            .where(_stale_queued(now, older_than_seconds), not_sent_lately)
            .order_by(runs.c.available_at)
            .limit(limit - len(to_enqueue))
            .with_for_update(skip_locked=True)
        ).scalars()
        to_enqueue += stale
    if to_enqueue:
        connection.execute(sa.update(runs).where(runs.c.id.in_(to_enqueue)).values(swept_at=now))
    return SweepReport(exhausted=exhausted, to_enqueue=to_enqueue)
