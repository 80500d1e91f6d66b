"""Deliveries: the outbox, one row per (run, sink, destination); disabled destinations.

Revision ID: 0004_deliveries
Revises: 0003_effects
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_deliveries"
down_revision: str | Sequence[str] | None = "0003_effects"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = sa.DateTime(timezone=True)


def _json() -> sa.JSON[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("sink", sa.String(16), nullable=False),
        sa.Column("destination", sa.String(1000), nullable=False),
        sa.Column("route", _json(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _UTC, nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", _UTC, nullable=True),
        sa.Column("receipt", _json(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("dead_reason", sa.String(200), nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.Column("delivered_at", _UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["analysis_runs.id"], name="fk_deliveries_run_id_analysis_runs"
        ),
        sa.UniqueConstraint(
            "run_id", "sink", "destination", name="uq_deliveries_run_id_sink_destination"
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'delivering', 'delivered', 'dead')",
            name="ck_deliveries_status",
        ),
        sa.CheckConstraint(
            "status <> 'dead' OR dead_reason IS NOT NULL", name="ck_deliveries_dead_has_reason"
        ),
    )
    op.create_index(
        "ix_deliveries_status_next_attempt_at", "deliveries", ["status", "next_attempt_at"]
    )
    op.create_index("ix_deliveries_created_at", "deliveries", ["created_at"])
    op.create_table(
        "disabled_destinations",
        sa.Column("destination", sa.String(1100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("disabled_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("destination", name="pk_disabled_destinations"),
    )


def downgrade() -> None:
    op.drop_table("disabled_destinations")
    op.drop_index("ix_deliveries_created_at", table_name="deliveries")
    op.drop_index("ix_deliveries_status_next_attempt_at", table_name="deliveries")
    op.drop_table("deliveries")
