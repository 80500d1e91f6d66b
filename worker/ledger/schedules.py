"""The beat's part of the ledger: one lease for the fleet's scheduler, and a row per firing.

Only the holder of the `beat` lease fires schedules; it renews the lease on every tick, and a
second beat takes the lease over once it has expired (its holder died or hung). A firing is
claimed by inserting (schedule, scheduled time) under a unique constraint, in the same
transaction that checks the lease is still held, so neither a restarted beat nor one that lost
its lease without knowing can fire a slot twice.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.ledger._sql import upsert_insert
from worker.ledger.clock import Clock, utc_now
from worker.ledger.engine import read_transaction, write_transaction
from worker.ledger.tables import rerun_jobs, schedule_firings, scheduler_leases

BEAT_LEASE = "beat"

FiringStatus = Literal["firing", "fired", "failed"]


@dataclass(frozen=True, slots=True)
class Firing:
    """One recorded firing of a schedule."""

    schedule: str
    scheduled_for: datetime
    action: str
    status: FiringStatus
    owner: str
    claimed_at: datetime
    finished_at: datetime | None
    detail: Any
    error: str | None


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Who holds the beat lease, and until when."""

    owner: str
    expires_at: datetime
    acquired_at: datetime


class ScheduleLedger:
    """The lease and firing operations, each one short transaction, on a ledger's engine."""

    def __init__(self, engine: Engine, *, now: Clock = utc_now) -> None:
        self.engine = engine
        self._clock = now

    def now(self) -> datetime:
        """The injected clock's time, in UTC."""
        return self._clock().astimezone(UTC)

    # The lease

    def hold_lease(self, owner: str, lease_seconds: float, name: str = BEAT_LEASE) -> bool:
        """Take or renew the lease for `owner`; False while another owner's lease is live.

        One conditional update (renew my lease, or take an expired one), else one insert that
        does nothing if another beat inserted first: two beats never both hold it.
        """
        now = self.now()
        expires = now + timedelta(seconds=lease_seconds)
        table = scheduler_leases
        with self._write() as connection:
            renewed = connection.execute(
                sa.update(table)
                .where(table.c.name == name, table.c.owner == owner, table.c.expires_at > now)
                .values(expires_at=expires, renewed_at=now)
            ).rowcount
            if renewed:
                return True
            taken = connection.execute(
                sa.update(table)
                .where(table.c.name == name, table.c.expires_at <= now)
                .values(owner=owner, expires_at=expires, acquired_at=now, renewed_at=now)
            ).rowcount
            if taken:
                return True
            inserted = connection.execute(
                upsert_insert(connection, table)
                .values(name=name, owner=owner, expires_at=expires, acquired_at=now, renewed_at=now)
                .on_conflict_do_nothing(index_elements=["name"])
                # RETURNING, not rowcount: PostgreSQL's driver does not report a skipped row.
                .returning(table.c.name)
            ).first()
            return inserted is not None

    def release_lease(self, owner: str, name: str = BEAT_LEASE) -> None:
        """Give the lease up now (a clean shutdown), so another beat need not wait it out."""
        with self._write() as connection:
            connection.execute(
                sa.update(scheduler_leases)
                .where(scheduler_leases.c.name == name, scheduler_leases.c.owner == owner)
                .values(expires_at=self.now())
            )

    def lease_holder(self, name: str = BEAT_LEASE) -> LeaseHolder | None:
        """The live lease's holder, or None when nobody holds it."""
        with self._read() as connection:
            row = connection.execute(
                sa.select(
                    scheduler_leases.c.owner,
                    scheduler_leases.c.expires_at,
                    scheduler_leases.c.acquired_at,
                ).where(scheduler_leases.c.name == name)
            ).one_or_none()
        if row is None or row.expires_at <= self.now():
            return None
        return LeaseHolder(row.owner, row.expires_at, row.acquired_at)

    # Firings

    def claim_firing(
        self,
        owner: str,
        schedule: str,
        scheduled_for: datetime,
        action: str,
        name: str = BEAT_LEASE,
    ) -> bool:
        """Record that `owner` fires `schedule` for `scheduled_for`; False when that slot was
        claimed before or `owner` no longer holds the lease (then it must not fire)."""
        now = self.now()
        with self._write() as connection:
            if not _holds(connection, name, owner, now):
                return False
            inserted = connection.execute(
                upsert_insert(connection, schedule_firings)
                .values(
                    schedule=schedule,
                    scheduled_for=scheduled_for,
                    action=action,
                    status="firing",
                    owner=owner,
                    claimed_at=now,
                )
                .on_conflict_do_nothing(index_elements=["schedule", "scheduled_for"])
                .returning(schedule_firings.c.id)
            ).first()
            return inserted is not None

    def adopt_firing(
        self, owner: str, schedule: str, scheduled_for: datetime, name: str = BEAT_LEASE
    ) -> bool:
        """Take over an unfinished firing (its beat died mid-action), if `owner` holds the
        lease; the action is then done again (it is idempotent by schedule and slot)."""
        now = self.now()
        with self._write() as connection:
            if not _holds(connection, name, owner, now):
                return False
            return bool(
                connection.execute(
                    sa.update(schedule_firings)
                    .where(
                        schedule_firings.c.schedule == schedule,
                        schedule_firings.c.scheduled_for == scheduled_for,
                        schedule_firings.c.status == "firing",
                    )
                    .values(owner=owner, claimed_at=now)
                ).rowcount
            )

    def finish_firing(
        self,
        schedule: str,
        scheduled_for: datetime,
        status: Literal["fired", "failed"],
        *,
        detail: Any = None,
        error: str | None = None,
    ) -> None:
        """Record how the firing ended."""
        with self._write() as connection:
            connection.execute(
                sa.update(schedule_firings)
                .where(
                    schedule_firings.c.schedule == schedule,
                    schedule_firings.c.scheduled_for == scheduled_for,
                )
                .values(status=status, finished_at=self.now(), detail=detail, error=error)
            )

    def unfinished(self) -> list[tuple[str, datetime]]:
        """(schedule, slot) of every firing still `firing`: claimed by a beat that has not said
        how it ended (it may have died)."""
        with self._read() as connection:
            rows = connection.execute(
                sa.select(schedule_firings.c.schedule, schedule_firings.c.scheduled_for)
                .where(schedule_firings.c.status == "firing")
                .order_by(schedule_firings.c.claimed_at)
            ).all()
        return [(row.schedule, row.scheduled_for) for row in rows]

    def state(self) -> tuple[dict[str, datetime], list[tuple[str, datetime]]]:
        """In one read: the latest recorded slot of every schedule, and the unfinished firings
        (as `unfinished`). A beat reads this once per tick."""
        with self._read() as connection:
            latest = connection.execute(
                sa.select(
                    schedule_firings.c.schedule,
                    sa.func.max(schedule_firings.c.scheduled_for).label("latest"),
                ).group_by(schedule_firings.c.schedule)
            ).all()
            unfinished = connection.execute(
                sa.select(schedule_firings.c.schedule, schedule_firings.c.scheduled_for)
                .where(schedule_firings.c.status == "firing")
                .order_by(schedule_firings.c.claimed_at)
            ).all()
        return (
            {row.schedule: _aware(row.latest) for row in latest},
            [(row.schedule, row.scheduled_for) for row in unfinished],
        )

    def latest_fired_slot(self, schedule: str) -> datetime | None:
        """The latest slot recorded for `schedule` (in any status), or None."""
        with self._read() as connection:
            value: datetime | None = connection.execute(
                sa.select(sa.func.max(schedule_firings.c.scheduled_for)).where(
                    schedule_firings.c.schedule == schedule
                )
            ).scalar_one()
        return None if value is None else _aware(value)

    def firings(self, schedule: str | None = None, limit: int = 1000) -> list[Firing]:
        """Recorded firings, oldest slot first."""
        query = sa.select(schedule_firings).order_by(
            schedule_firings.c.scheduled_for, schedule_firings.c.schedule
        )
        if schedule is not None:
            query = query.where(schedule_firings.c.schedule == schedule)
        with self._read() as connection:
            rows = connection.execute(query.limit(limit)).all()
        return [
            Firing(
                schedule=row.schedule,
                scheduled_for=row.scheduled_for,
                action=row.action,
                status=row.status,
                owner=row.owner,
                claimed_at=row.claimed_at,
                finished_at=row.finished_at,
                detail=row.detail,
                error=row.error,
            )
            for row in rows
        ]

    def rerun_job_requested_by(self, requested_by: str) -> str | None:
        """The id of the rerun job started under `requested_by` (a schedule's firing), if any."""
        with self._read() as connection:
            found: str | None = connection.execute(
                sa.select(rerun_jobs.c.id)
                .where(rerun_jobs.c.requested_by == requested_by)
                .order_by(rerun_jobs.c.created_at)
                .limit(1)
            ).scalar_one_or_none()
        return found

    def _write(self) -> AbstractContextManager[Connection]:
        return write_transaction(self.engine)

    def _read(self) -> AbstractContextManager[Connection]:
        return read_transaction(self.engine)


def _aware(value: datetime | str) -> datetime:
    # SQLite hands aggregates back as text, without the column type's conversion to UTC.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _holds(connection: Connection, name: str, owner: str, now: datetime) -> bool:
    return (
        connection.execute(
            sa.select(scheduler_leases.c.owner)
            .where(
                scheduler_leases.c.name == name,
                scheduler_leases.c.owner == owner,
                scheduler_leases.c.expires_at > now,
            )
            # PostgreSQL: the lease row stays as read until this firing commits.
            .with_for_update()
        ).one_or_none()
        is not None
    )
