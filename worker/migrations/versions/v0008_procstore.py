"""The procedure store: stored procedure versions with their review state, and their support.

Revision ID: 0008_procstore
Revises: 0007_delivery_wakeups
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_procstore"
down_revision: str | Sequence[str] | None = "0007_delivery_wakeups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = sa.DateTime(timezone=True)


def _json() -> sa.JSON[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "procedures",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("agent_id", sa.String(200), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(16), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("body", _json(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("decided_at", _UTC, nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("review", _json(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_procedures"),
        sa.UniqueConstraint(
            "tenant_id",
            "agent_id",
            "name",
            "version",
            name="uq_procedures_tenant_id_agent_id_name_version",
        ),
        sa.UniqueConstraint(
            "tenant_id",
            "agent_id",
            "name",
            "content_hash",
            name="uq_procedures_tenant_id_agent_id_name_content_hash",
        ),
        sa.CheckConstraint(
            "status IN ('approved', 'pending', 'rejected')", name="ck_procedures_status"
        ),
        sa.CheckConstraint("version >= 1", name="ck_procedures_version"),
    )
    op.create_index("ix_procedures_tenant_id_status", "procedures", ["tenant_id", "status"])
    op.create_table(
        "procedure_support",
        sa.Column("procedure_id", sa.String(64), nullable=False),
        sa.Column("conversation_id", sa.String(200), nullable=False),
        sa.Column("added_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["procedure_id"],
            ["procedures.id"],
            name="fk_procedure_support_procedure_id_procedures",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("procedure_id", "conversation_id", name="pk_procedure_support"),
    )


def downgrade() -> None:
    op.drop_table("procedure_support")
    op.drop_index("ix_procedures_tenant_id_status", table_name="procedures")
    op.drop_table("procedures")
