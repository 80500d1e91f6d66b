"""The effects table: one row per write-effect HTTP call, keyed by its idempotency key.

Revision ID: 0003_effects
Revises: 0002_pinned
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_effects"
down_revision: str | Sequence[str] | None = "0002_pinned"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A frozen copy of the type this revision was written with.
_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "effects",
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("tool_name", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(500), nullable=False),
        sa.Column("call_number", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("is_error", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key", name="pk_effects"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["analysis_runs.id"], name="fk_effects_run_id_analysis_runs"
        ),
        sa.CheckConstraint("state IN ('pending', 'done')", name="ck_effects_state"),
        sa.CheckConstraint("sends >= 1", name="ck_effects_sends"),
    )
    op.create_index("ix_effects_run_id", "effects", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_effects_run_id", table_name="effects")
    op.drop_table("effects")
