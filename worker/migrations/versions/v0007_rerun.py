"""Rerun jobs and their items, chained runs, and the `chain` trigger.

Revision ID: 0007_rerun
Revises: 0006_fleet
Create Date: 2026-11-30

`rerun_jobs` holds one row per `posthoc rerun` (selection, budget, estimate, the process working
on it); `rerun_job_items` the conversations it selected, fixed at creation, each with the run
recorded for it, so a killed job resumes without running anything twice.
`analysis_runs.parent_run_id` points a chained run at the run whose outputs started it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_rerun"
down_revision: str | Sequence[str] | None = "0006_fleet"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)
_OLD_TRIGGERS = "trigger IN ('webhook', 'cli', 'rerun', 'schedule', 'api', 'invoke')"
_NEW_TRIGGERS = "trigger IN ('webhook', 'cli', 'rerun', 'schedule', 'api', 'invoke', 'chain')"


def _json() -> sa.JSON[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "rerun_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("analyzer", sa.String(200), nullable=False),
        sa.Column("analyzer_version", sa.String(100), nullable=False),
        sa.Column("selection", _json(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("budget_usd", sa.Float(), nullable=True),
        sa.Column("allow_writes", sa.Boolean(), nullable=False),
        sa.Column("deliver", sa.Boolean(), nullable=False),
        sa.Column("batch", sa.Boolean(), nullable=False),
        sa.Column("estimate_per_run_usd", sa.Float(), nullable=False),
        sa.Column("estimated_usd", sa.Float(), nullable=False),
        sa.Column("selected", sa.Integer(), nullable=False),
        sa.Column("runner", sa.String(200), nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.Column("finished_at", _UTC, nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'done', 'cancelled', 'budget_exhausted')",
            name=op.f("ck_rerun_jobs_status"),
        ),
        sa.PrimaryKeyConstraint("id", name="pk_rerun_jobs"),
    )
    op.create_index("ix_rerun_jobs_created_at", "rerun_jobs", ["created_at"])
    op.create_table(
        "rerun_job_items",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("conversation_pk", _BIG_PK, nullable=False),
        sa.Column("version_id", _BIG_PK, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'recorded', 'skipped')", name=op.f("ck_rerun_job_items_state")
        ),
        sa.CheckConstraint(
            "state <> 'recorded' OR run_id IS NOT NULL",
            name=op.f("ck_rerun_job_items_recorded_has_run"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["rerun_jobs.id"], name="fk_rerun_job_items_job_id_rerun_jobs"
        ),
        sa.ForeignKeyConstraint(
            ["conversation_pk"],
            ["conversations.id"],
            name="fk_rerun_job_items_conversation_pk_conversations",
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["conversation_versions.id"],
            name="fk_rerun_job_items_version_id_conversation_versions",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["analysis_runs.id"], name="fk_rerun_job_items_run_id_analysis_runs"
        ),
        sa.PrimaryKeyConstraint("job_id", "position", name="pk_rerun_job_items"),
        sa.UniqueConstraint(
            "job_id", "conversation_pk", name="uq_rerun_job_items_job_id_conversation_pk"
        ),
    )
    op.create_index("ix_rerun_job_items_job_id_state", "rerun_job_items", ["job_id", "state"])
    op.create_index("ix_rerun_job_items_run_id", "rerun_job_items", ["run_id"])
    with op.batch_alter_table("analysis_runs") as batch:
        batch.add_column(sa.Column("parent_run_id", sa.String(64), nullable=True))
        batch.create_foreign_key(
            op.f("fk_analysis_runs_parent_run_id_analysis_runs"),
            "analysis_runs",
            ["parent_run_id"],
            ["id"],
        )
        batch.drop_constraint(op.f("ck_analysis_runs_trigger"), type_="check")
        batch.create_check_constraint("trigger", _NEW_TRIGGERS)


def downgrade() -> None:
    with op.batch_alter_table("analysis_runs") as batch:
        batch.drop_constraint(op.f("ck_analysis_runs_trigger"), type_="check")
        batch.create_check_constraint("trigger", _OLD_TRIGGERS)
        batch.drop_constraint(
            op.f("fk_analysis_runs_parent_run_id_analysis_runs"), type_="foreignkey"
        )
        batch.drop_column("parent_run_id")
    op.drop_index("ix_rerun_job_items_run_id", table_name="rerun_job_items")
    op.drop_index("ix_rerun_job_items_job_id_state", table_name="rerun_job_items")
    op.drop_table("rerun_job_items")
    op.drop_index("ix_rerun_jobs_created_at", table_name="rerun_jobs")
    op.drop_table("rerun_jobs")
