"""Pinned runs: conversation versions, analyzer snapshots, usage per attempt.

Revision ID: 0002_pinned
Revises: 0001
Create Date: 2026-11-30

Additive only. Existing conversations get their stored content as version 1, and existing runs
point at it (the content a queued run would have read anyway). Runs recorded before this
revision have no snapshot (`spec_hash` NULL); the worker then runs the loaded analyzer of the
recorded name and version, or fails the run if that exact version is not loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_pinned"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types this revision was written with.
_BIG_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = sa.DateTime(timezone=True)

_ATTEMPT_USAGE = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


_RUN_REFERENCES: tuple[tuple[str, Any, str, str], ...] = (
    (
        "conversation_version_id",
        _BIG_PK,
        "fk_analysis_runs_conversation_version_id_conversation_versions",
        "conversation_versions.id",
    ),
    (
        "spec_hash",
        sa.String(64),
        "fk_analysis_runs_spec_hash_analyzer_snapshots",
        "analyzer_snapshots.spec_hash",
    ),
)


def _json() -> sa.JSON[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def upgrade() -> None:
    op.create_table(
        "conversation_versions",
        sa.Column("id", _BIG_PK, autoincrement=True, nullable=False),
        sa.Column("conversation_pk", _BIG_PK, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("received_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversation_versions"),
        sa.ForeignKeyConstraint(
            ["conversation_pk"],
            ["conversations.id"],
            name="fk_conversation_versions_conversation_pk_conversations",
        ),
        sa.UniqueConstraint(
            "conversation_pk", "version", name="uq_conversation_versions_conversation_pk_version"
        ),
        sa.UniqueConstraint(
            "conversation_pk",
            "content_hash",
            name="uq_conversation_versions_conversation_pk_content_hash",
        ),
        sa.CheckConstraint("version >= 1", name="ck_conversation_versions_version"),
    )
    op.create_table(
        "analyzer_snapshots",
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("analyzer", sa.String(200), nullable=False),
        sa.Column("analyzer_version", sa.String(100), nullable=False),
        sa.Column("snapshot", _json(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("spec_hash", name="pk_analyzer_snapshots"),
    )
    op.create_index(
        "ix_analyzer_snapshots_analyzer_analyzer_version",
        "analyzer_snapshots",
        ["analyzer", "analyzer_version"],
    )
    for column, column_type, fk_name, target in _RUN_REFERENCES:
        if op.get_bind().dialect.name == "sqlite":
            # SQLite cannot add a foreign key to an existing table, but it can add a column
            # that carries one: a named column constraint inside ADD COLUMN.
            ddl_type = "INTEGER" if column_type is _BIG_PK else "VARCHAR(64)"
            table, target_column = target.split(".")
            op.execute(
                f"ALTER TABLE analysis_runs ADD COLUMN {column} {ddl_type} "
                f"CONSTRAINT {fk_name} REFERENCES {table} ({target_column})"
            )
        else:
            op.add_column("analysis_runs", sa.Column(column, column_type, nullable=True))
            table, target_column = target.split(".")
            op.create_foreign_key(fk_name, "analysis_runs", table, [column], [target_column])
    for column in _ATTEMPT_USAGE:
        op.add_column("run_attempts", sa.Column(column, sa.BigInteger(), nullable=True))
    op.add_column("run_attempts", sa.Column("cost_usd", sa.Float(), nullable=True))
    op.execute(
        "INSERT INTO conversation_versions "
        "(conversation_pk, version, content_hash, payload, received_at) "
        "SELECT id, 1, transcript_hash, payload, updated_at FROM conversations"
    )
    op.execute(
        "UPDATE analysis_runs SET conversation_version_id = (SELECT v.id FROM "
        "conversation_versions v WHERE v.conversation_pk = analysis_runs.conversation_pk)"
    )


def downgrade() -> None:
    op.drop_column("run_attempts", "cost_usd")
    for column in reversed(_ATTEMPT_USAGE):
        op.drop_column("run_attempts", column)
    # SQLite (3.35+) drops a column only when no constraint names it: copy the table there.
    with op.batch_alter_table("analysis_runs") as batch:
        for column, _type, fk_name, _target in reversed(_RUN_REFERENCES):
            batch.drop_constraint(fk_name, type_="foreignkey")
            batch.drop_column(column)
    op.drop_index(
        "ix_analyzer_snapshots_analyzer_analyzer_version", table_name="analyzer_snapshots"
    )
    op.drop_table("analyzer_snapshots")
    op.drop_table("conversation_versions")
