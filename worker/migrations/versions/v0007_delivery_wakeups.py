"""When a delivery's wake-up message was last sent.

Revision ID: 0007_delivery_wakeups
Revises: 0006_fleet
Create Date: 2026-11-30

The delivery sweeper used to send a wake-up for every pending, due delivery at each sweep; a
delivery whose message merely waited behind a long queue got a new one every ten seconds, and
the queue grew without bound. Now a delivery woken lately is left alone (its message is on its
way) until `stale_queued_seconds` have passed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_delivery_wakeups"
down_revision: str | Sequence[str] | None = "0006_fleet"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("woken_at", _UTC, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("woken_at")
