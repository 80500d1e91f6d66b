"""The ledger: conversations, analysis runs and their attempts.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Deliveries (one row per run, sink and destination, with their own attempts) come in a later
revision with a foreign key to analysis_runs.id; nothing here needs to change for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types this revision was written with: a later change to the live
# metadata must not change what this revision creates.
_BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)


def _json() -> sa.JSON[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", _BIG_PK, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("conversation_id", sa.String(200), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("transcript_hash", sa.String(64), nullable=False),
        sa.Column("received_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.UniqueConstraint(
            "tenant_id", "conversation_id", name="uq_conversations_tenant_id_conversation_id"
        ),
    )
    op.create_table(
        "analysis_runs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("conversation_pk", _BIG_PK, nullable=False),
        sa.Column("analyzer", sa.String(200), nullable=False),
        sa.Column("analyzer_version", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(500), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("attempt_budget", sa.Integer(), nullable=False),
        sa.Column("available_at", _UTC, nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", _UTC, nullable=True),
        sa.Column("swept_at", _UTC, nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("started_at", _UTC, nullable=True),
        sa.Column("finished_at", _UTC, nullable=True),
        sa.Column("error_type", sa.String(100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_retryable", sa.Boolean(), nullable=True),
        sa.Column("result", _json(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("output_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cache_read_input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cache_creation_input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("rerun_of", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_analysis_runs"),
        sa.ForeignKeyConstraint(
            ["conversation_pk"],
            ["conversations.id"],
            name="fk_analysis_runs_conversation_pk_conversations",
        ),
        sa.ForeignKeyConstraint(
            ["rerun_of"], ["analysis_runs.id"], name="fk_analysis_runs_rerun_of_analysis_runs"
        ),
        sa.UniqueConstraint("idempotency_key", name="uq_analysis_runs_idempotency_key"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'skipped')",
            name="ck_analysis_runs_status",
        ),
        sa.CheckConstraint(
            "trigger IN ('webhook', 'cli', 'rerun', 'schedule')", name="ck_analysis_runs_trigger"
        ),
        sa.CheckConstraint(
            "attempts >= 0 AND attempts <= max_attempts", name="ck_analysis_runs_attempts"
        ),
        sa.CheckConstraint(
            "attempt_budget >= 1 AND max_attempts >= 1", name="ck_analysis_runs_budget"
        ),
        sa.CheckConstraint(
            "status <> 'running' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)",
            name="ck_analysis_runs_running_has_lease",
        ),
        sa.CheckConstraint(
            "status <> 'skipped' OR skip_reason IS NOT NULL",
            name="ck_analysis_runs_skipped_has_reason",
        ),
    )
    op.create_index(
        "ix_analysis_runs_status_available_at", "analysis_runs", ["status", "available_at"]
    )
    op.create_index(
        "ix_analysis_runs_status_lease_expires_at", "analysis_runs", ["status", "lease_expires_at"]
    )
    op.create_index("ix_analysis_runs_analyzer_status", "analysis_runs", ["analyzer", "status"])
    op.create_index("ix_analysis_runs_conversation_pk", "analysis_runs", ["conversation_pk"])
    op.create_index("ix_analysis_runs_created_at", "analysis_runs", ["created_at"])
    op.create_table(
        "run_attempts",
        sa.Column("id", _BIG_PK, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(200), nullable=False),
        sa.Column("started_at", _UTC, nullable=False),
        sa.Column("finished_at", _UTC, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("error_type", sa.String(100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_run_attempts"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["analysis_runs.id"], name="fk_run_attempts_run_id_analysis_runs"
        ),
        sa.UniqueConstraint("run_id", "attempt", name="uq_run_attempts_run_id_attempt"),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN "
            "('succeeded', 'failed', 'retry', 'lease_lost', 'expired')",
            name="ck_run_attempts_outcome",
        ),
    )


def downgrade() -> None:
    op.drop_table("run_attempts")
    op.drop_index("ix_analysis_runs_created_at", table_name="analysis_runs")
    op.drop_index("ix_analysis_runs_conversation_pk", table_name="analysis_runs")
    op.drop_index("ix_analysis_runs_analyzer_status", table_name="analysis_runs")
    op.drop_index("ix_analysis_runs_status_lease_expires_at", table_name="analysis_runs")
    op.drop_index("ix_analysis_runs_status_available_at", table_name="analysis_runs")
    op.drop_table("analysis_runs")
    op.drop_table("conversations")
