"""Enqueue tracking per run: when its message was last sent, and how many were sent.

Revision ID: 0006_fleet
Revises: 0005_intake
Create Date: 2026-11-30

The sweeper compares the runs waiting for a message against the broker's queue depth and
re-sends only those whose message the queue can no longer hold; `enqueue_count` lets operators
(and the chaos test) see how many messages each run cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_fleet"
down_revision: str | Sequence[str] | None = "0005_intake"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("analysis_runs") as batch:
        batch.add_column(sa.Column("enqueued_at", _UTC, nullable=True))
        batch.add_column(
            sa.Column("enqueue_count", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("analysis_runs") as batch:
        batch.drop_column("enqueue_count")
        batch.drop_column("enqueued_at")
