"""Schedules: the beat lease and the record of every firing.

Revision ID: 0010_sched
Revises: 0009_rerun
Create Date: 2026-11-30

`scheduler_leases` holds the one lease that lets a single `posthoc beat` fire at a time across
the fleet; `schedule_firings` records each firing under (schedule, scheduled time), unique, so
a restarted or second beat never fires a slot twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_sched"
# Merges the heads of parallel branches (rerun jobs; delivery wake-ups then the procedure
# store); the lead may re-chain this linearly on merge.
down_revision: str | Sequence[str] | None = "0009_rerun"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)


def _json() -> sa.JSON[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "scheduler_leases",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("expires_at", _UTC, nullable=False),
        sa.Column("acquired_at", _UTC, nullable=False),
        sa.Column("renewed_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_scheduler_leases"),
    )
    op.create_table(
        "schedule_firings",
        sa.Column("id", _BIG_PK, autoincrement=True, nullable=False),
        sa.Column("schedule", sa.String(200), nullable=False),
        sa.Column("scheduled_for", _UTC, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("claimed_at", _UTC, nullable=False),
        sa.Column("finished_at", _UTC, nullable=True),
        sa.Column("detail", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_schedule_firings"),
        sa.UniqueConstraint(
            "schedule", "scheduled_for", name="uq_schedule_firings_schedule_scheduled_for"
        ),
        sa.CheckConstraint(
            "status IN ('firing', 'fired', 'failed')", name="ck_schedule_firings_status"
        ),
    )
    op.create_index(
        "ix_schedule_firings_status_claimed_at", "schedule_firings", ["status", "claimed_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_schedule_firings_status_claimed_at", table_name="schedule_firings")
    op.drop_table("schedule_firings")
    op.drop_table("scheduler_leases")
