"""HTTP intake: tenant API keys, the webhook delivery log, and the `api` and `invoke` triggers.

Revision ID: 0005_intake
Revises: 0004_deliveries
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_intake"
down_revision: str | Sequence[str] | None = "0004_deliveries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)
_OLD_TRIGGERS = "trigger IN ('webhook', 'cli', 'rerun', 'schedule')"
_NEW_TRIGGERS = "trigger IN ('webhook', 'cli', 'rerun', 'schedule', 'api', 'invoke')"


def _json() -> sa.JSON[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("revoked_at", _UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _BIG_PK, autoincrement=True, nullable=False),
        sa.Column("received_at", _UTC, nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("tenant_id", sa.String(200), nullable=True),
        sa.Column("event_type", sa.String(200), nullable=True),
        sa.Column("event_id", sa.String(500), nullable=True),
        sa.Column("signature", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("run_ids", _json(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
    )
    op.create_index(
        "ix_webhook_deliveries_source_event_id", "webhook_deliveries", ["source", "event_id"]
    )
    op.create_index("ix_webhook_deliveries_received_at", "webhook_deliveries", ["received_at"])
    _replace_trigger_check(_NEW_TRIGGERS)


def downgrade() -> None:
    _replace_trigger_check(_OLD_TRIGGERS)
    op.drop_index("ix_webhook_deliveries_received_at", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_source_event_id", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("api_keys")


def _replace_trigger_check(condition: str) -> None:
    # Batch mode rebuilds the table on SQLite, which cannot alter a CHECK constraint in place.
    with op.batch_alter_table("analysis_runs") as batch:
        batch.drop_constraint("ck_analysis_runs_trigger", type_="check")
        batch.create_check_constraint("trigger", condition)
