"""The ledger's tables, as SQLAlchemy Core metadata.

The migrations in `worker/migrations` create exactly this schema (a test compares the two on
both backends). Timestamps are always timezone-aware UTC in Python; on SQLite they are stored as
fixed-width UTC text, so comparing them in SQL is comparing times.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from worker.ledger.records import ATTEMPT_OUTCOMES, RUN_STATES, TRIGGERS

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is timezone-aware UTC in Python on every backend.

    Naive datetimes are refused rather than guessed at: a naive value is a bug in the caller.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"the ledger stores timezone-aware datetimes only, got {value!r}")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store UTC without an offset, so the text sorts as time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> sa.JSON[Any]:
    # JSONB on PostgreSQL (queryable, compact); JSON text elsewhere. None is SQL NULL.
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )


def _one_of(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


# A surrogate key: BIGINT on PostgreSQL, INTEGER (the rowid alias, so it autoincrements) on SQLite.
BigPk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", BigPk, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("conversation_id", sa.String(200), nullable=False),
    sa.Column("payload", _json(), nullable=False),
    sa.Column("transcript_hash", sa.String(64), nullable=False),
    sa.Column("received_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("tenant_id", "conversation_id"),
)

# Every distinct content a conversation was received with, append-only (revision 0002). The
# `conversations` row keeps the newest content for the reads that want "the conversation";
# runs point at the version they were recorded for.
conversation_versions = sa.Table(
    "conversation_versions",
    metadata,
    sa.Column("id", BigPk, primary_key=True, autoincrement=True),
    sa.Column("conversation_pk", BigPk, sa.ForeignKey("conversations.id"), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("payload", _json(), nullable=False),
    sa.Column("received_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("conversation_pk", "version"),
    sa.UniqueConstraint("conversation_pk", "content_hash"),
    sa.CheckConstraint("version >= 1", name="version"),
)

# Analyzer snapshots, content-addressed by `spec_hash` and stored once (revision 0002).
analyzer_snapshots = sa.Table(
    "analyzer_snapshots",
    metadata,
    sa.Column("spec_hash", sa.String(64), primary_key=True),
    sa.Column("analyzer", sa.String(200), nullable=False),
    sa.Column("analyzer_version", sa.String(100), nullable=False),
    sa.Column("snapshot", _json(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index(None, "analyzer", "analyzer_version"),
)

analysis_runs = sa.Table(
    "analysis_runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("conversation_pk", BigPk, sa.ForeignKey("conversations.id"), nullable=False),
    sa.Column("analyzer", sa.String(200), nullable=False),
    sa.Column("analyzer_version", sa.String(100), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("skip_reason", sa.Text()),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("idempotency_key", sa.String(500), unique=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    # The plan's max_attempts: `requeue_failed` grants this many fresh attempts again.
    sa.Column("attempt_budget", sa.Integer(), nullable=False),
    sa.Column("available_at", UtcDateTime(), nullable=False),
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_expires_at", UtcDateTime()),
    # When the sweeper last asked for this run to be enqueued again, so it asks at most once
    # per interval however long the queue is.
    sa.Column("swept_at", UtcDateTime()),
    # When a message for this run was last put on the broker, and how many were: the sweeper
    # re-sends only runs whose message the queue no longer holds (revision 0006_fleet).
    sa.Column("enqueued_at", UtcDateTime()),
    sa.Column("enqueue_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    # When the latest attempt was claimed (every attempt's own times are in run_attempts).
    sa.Column("started_at", UtcDateTime()),
    sa.Column("finished_at", UtcDateTime()),
    # The final error, or while queued for a retry the last transient one.
    sa.Column("error_type", sa.String(100)),
    sa.Column("error_message", sa.Text()),
    sa.Column("error_retryable", sa.Boolean()),
    sa.Column("result", _json()),
    sa.Column("cost_usd", sa.Float()),
    sa.Column("input_tokens", sa.BigInteger()),
    sa.Column("output_tokens", sa.BigInteger()),
    sa.Column("cache_read_input_tokens", sa.BigInteger()),
    sa.Column("cache_creation_input_tokens", sa.BigInteger()),
    sa.Column("rerun_of", sa.String(64), sa.ForeignKey("analysis_runs.id")),
    # What exactly the run analyses with what (revision 0002): the conversation version it was
    # recorded for and the analyzer snapshot it executes. NULL only for runs recorded before.
    sa.Column("conversation_version_id", BigPk, sa.ForeignKey("conversation_versions.id")),
    sa.Column("spec_hash", sa.String(64), sa.ForeignKey("analyzer_snapshots.spec_hash")),
    # A chained run (`after:` in the analyzer): the run whose outputs started it (0009_rerun).
    sa.Column("parent_run_id", sa.String(64), sa.ForeignKey("analysis_runs.id")),
    sa.CheckConstraint(_one_of("status", RUN_STATES), name="status"),
    sa.CheckConstraint(_one_of("trigger", TRIGGERS), name="trigger"),
    sa.CheckConstraint("attempts >= 0 AND attempts <= max_attempts", name="attempts"),
    sa.CheckConstraint("attempt_budget >= 1 AND max_attempts >= 1", name="budget"),
    sa.CheckConstraint(
        "status <> 'running' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)",
        name="running_has_lease",
    ),
    sa.CheckConstraint("status <> 'skipped' OR skip_reason IS NOT NULL", name="skipped_has_reason"),
    sa.Index(None, "status", "available_at"),
    sa.Index(None, "status", "lease_expires_at"),
    sa.Index(None, "analyzer", "status"),
    sa.Index(None, "conversation_pk"),
    sa.Index(None, "created_at"),
)

run_attempts = sa.Table(
    "run_attempts",
    metadata,
    sa.Column("id", BigPk, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("analysis_runs.id"), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("worker_id", sa.String(200), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("finished_at", UtcDateTime()),
    sa.Column("outcome", sa.String(16)),
    sa.Column("error_type", sa.String(100)),
    sa.Column("error_message", sa.Text()),
    # What this attempt spent (revision 0002); a run's figures are the sums over its attempts.
    sa.Column("input_tokens", sa.BigInteger()),
    sa.Column("output_tokens", sa.BigInteger()),
    sa.Column("cache_read_input_tokens", sa.BigInteger()),
    sa.Column("cache_creation_input_tokens", sa.BigInteger()),
    sa.Column("cost_usd", sa.Float()),
    sa.UniqueConstraint("run_id", "attempt"),
    sa.CheckConstraint(
        f"outcome IS NULL OR {_one_of('outcome', ATTEMPT_OUTCOMES)}", name="outcome"
    ),
)

EFFECT_STATES = ("pending", "done")

effects = sa.Table(
    "effects",
    metadata,
    # The idempotency key the request carried: derived from the run and the call's place in it.
    sa.Column("idempotency_key", sa.String(200), primary_key=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("analysis_runs.id"), nullable=False),
    sa.Column("tool_name", sa.String(200), nullable=False),
    sa.Column("scope", sa.String(500), nullable=False),
    sa.Column("call_number", sa.Integer(), nullable=False),
    sa.Column("method", sa.String(10), nullable=False),
    # Redacted of secrets, like everything the runtime hands over.
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    # The outcome as JSON text: a response may hold a NUL, which PostgreSQL's JSONB refuses.
    sa.Column("outcome", sa.Text()),
    sa.Column("is_error", sa.Boolean(), nullable=False),
    sa.Column("status_code", sa.Integer()),
    sa.Column("sends", sa.Integer(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.CheckConstraint(_one_of("state", EFFECT_STATES), name="state"),
    sa.CheckConstraint("sends >= 1", name="sends"),
    sa.Index(None, "run_id"),
)

DELIVERY_STATES = ("pending", "delivering", "delivered", "dead")
"""pending: waits for `next_attempt_at`; delivering: leased by a worker; delivered; dead: the
dead-letter state, with `dead_reason` (replay puts it back to pending)."""

deliveries = sa.Table(
    "deliveries",
    metadata,
    # The delivery id: stable across retries (Slack metadata, webhook-id, JSONL lines).
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("analysis_runs.id"), nullable=False),
    sa.Column("sink", sa.String(16), nullable=False),
    sa.Column("destination", sa.String(1000), nullable=False),
    # The route as the run saw it (channel, mentions, url, secret name, mapping): deliveries
    # never read today's analyzer files.
    sa.Column("route", _json(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_expires_at", UtcDateTime()),
    # When a wake-up message was last sent for it: the sweeper leaves a lately woken delivery
    # alone, its message may wait behind a long queue (NULL: none on its way).
    sa.Column("woken_at", UtcDateTime()),
    # What the destination told us (Slack: channel id and each part's ts).
    sa.Column("receipt", _json()),
    sa.Column("last_error", sa.Text()),
    sa.Column("dead_reason", sa.String(200)),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("delivered_at", UtcDateTime()),
    sa.UniqueConstraint("run_id", "sink", "destination"),
    sa.CheckConstraint(_one_of("status", DELIVERY_STATES), name="status"),
    sa.CheckConstraint("status <> 'dead' OR dead_reason IS NOT NULL", name="dead_has_reason"),
    sa.Index(None, "status", "next_attempt_at"),
    sa.Index(None, "created_at"),
)

disabled_destinations = sa.Table(
    "disabled_destinations",
    metadata,
    # "<sink>:<destination>", e.g. a webhook url that answered 410 Gone.
    sa.Column("destination", sa.String(1100), primary_key=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("disabled_at", UtcDateTime(), nullable=False),
)

ACCEPTED_EVENT_INDEX = "uq_webhook_deliveries_accepted_event"

# HTTP intake: tenant API keys (only a hash of the key is stored) and the log of webhook
# deliveries (what arrived, the signature verdict, the answer and the runs; never the body).
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("label", sa.String(200)),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("revoked_at", UtcDateTime()),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", BigPk, primary_key=True, autoincrement=True),
    sa.Column("received_at", UtcDateTime(), nullable=False),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("tenant_id", sa.String(200)),
    sa.Column("event_type", sa.String(200)),
    sa.Column("event_id", sa.String(500)),
    sa.Column("signature", sa.String(16), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text()),
    sa.Column("run_ids", _json()),
    sa.Index("ix_webhook_deliveries_source_event_id", "source", "event_id"),
    sa.Index("ix_webhook_deliveries_received_at", "received_at"),
    # One accepted delivery per event identity: a redelivery racing the first (another batch,
    # another process) finds the claim taken and answers as a duplicate.
    sa.Index(
        ACCEPTED_EVENT_INDEX,
        "source",
        "event_id",
        unique=True,
        postgresql_where=sa.text("outcome = 'accepted'"),
        sqlite_where=sa.text("outcome = 'accepted'"),
    ),
)

# Rerun jobs (revision 0009_rerun): one row per `posthoc rerun`, and one item per selected
# conversation, fixed when the job is created so a resumed job works on exactly that list.
JOB_STATUSES = ("running", "done", "cancelled", "budget_exhausted")
JOB_ITEM_STATES = ("pending", "recorded", "skipped")

rerun_jobs = sa.Table(
    "rerun_jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("analyzer", sa.String(200), nullable=False),
    sa.Column("analyzer_version", sa.String(100), nullable=False),
    # The RerunSelection as given (JSON), for `jobs show` and schedules.
    sa.Column("selection", _json(), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("requested_by", sa.String(200), nullable=False),
    sa.Column("budget_usd", sa.Float()),
    sa.Column("allow_writes", sa.Boolean(), nullable=False),
    sa.Column("deliver", sa.Boolean(), nullable=False),
    sa.Column("batch", sa.Boolean(), nullable=False),
    # What one run is expected to cost at the standard price, and the whole job's estimate.
    sa.Column("estimate_per_run_usd", sa.Float(), nullable=False),
    sa.Column("estimated_usd", sa.Float(), nullable=False),
    sa.Column("selected", sa.Integer(), nullable=False),
    # The process working on the job ("host:pid:token"), so a resume can take over its runs.
    sa.Column("runner", sa.String(200)),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("finished_at", UtcDateTime()),
    sa.CheckConstraint(_one_of("status", JOB_STATUSES), name="status"),
    sa.Index(None, "created_at"),
)

rerun_job_items = sa.Table(
    "rerun_job_items",
    metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("rerun_jobs.id"), primary_key=True),
    sa.Column("position", sa.Integer(), primary_key=True),
    sa.Column("conversation_pk", BigPk, sa.ForeignKey("conversations.id"), nullable=False),
    sa.Column("version_id", BigPk, sa.ForeignKey("conversation_versions.id")),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("analysis_runs.id")),
    sa.Column("reason", sa.Text()),
    sa.UniqueConstraint("job_id", "conversation_pk"),
    sa.CheckConstraint(_one_of("state", JOB_ITEM_STATES), name="state"),
    sa.CheckConstraint("state <> 'recorded' OR run_id IS NOT NULL", name="recorded_has_run"),
    sa.Index(None, "job_id", "state"),
    sa.Index(None, "run_id"),
)

# Schedules (`posthoc beat`): the lease that lets one beat fire at a time across the fleet, and
# one row per firing under (schedule, scheduled time), so a restarted or second beat never
# fires a slot twice.
scheduler_leases = sa.Table(
    "scheduler_leases",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
    sa.Column("acquired_at", UtcDateTime(), nullable=False),
    sa.Column("renewed_at", UtcDateTime(), nullable=False),
)

FIRING_STATES = ("firing", "fired", "failed")
"""firing: claimed, its action under way (a beat that dies here leaves it for the next
leaseholder to finish; the action is idempotent by (schedule, slot)); fired: done, with what it
recorded in `detail`; failed: the action could not be done (the reason in `error`)."""

schedule_firings = sa.Table(
    "schedule_firings",
    metadata,
    sa.Column("id", BigPk, primary_key=True, autoincrement=True),
    sa.Column("schedule", sa.String(200), nullable=False),
    sa.Column("scheduled_for", UtcDateTime(), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("claimed_at", UtcDateTime(), nullable=False),
    sa.Column("finished_at", UtcDateTime()),
    sa.Column("detail", _json()),
    sa.Column("error", sa.Text()),
    sa.UniqueConstraint("schedule", "scheduled_for"),
    sa.CheckConstraint(_one_of("status", FIRING_STATES), name="status"),
    sa.Index(None, "status", "claimed_at"),
)

PROCEDURE_STATUSES = ("approved", "pending", "rejected")

# The procedure store (revision 0008_procstore): one row per stored version of a procedure,
# keyed by (tenant, owner agent, name). '' in `tenant_id` means every tenant and in `agent_id`
# tenant-wide, so the unique constraints hold on both backends (NULLs never collide).
procedures = sa.Table(
    "procedures",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("agent_id", sa.String(200), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_by", sa.String(16), nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    # The procedure as JSON (schemas.procedure.Procedure), its `approved` from `status`.
    sa.Column("body", _json(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("decided_at", UtcDateTime()),
    sa.Column("decided_by", sa.String(200)),
    # The Slack review message of a pending version: channel, attempts and Slack's receipt
    # (worker/sinks/procedure_review.py), so a retried post is looked up, never duplicated.
    sa.Column("review", _json()),
    sa.UniqueConstraint("tenant_id", "agent_id", "name", "version"),
    sa.UniqueConstraint("tenant_id", "agent_id", "name", "content_hash"),
    sa.CheckConstraint(_one_of("status", PROCEDURE_STATUSES), name="status"),
    sa.CheckConstraint("version >= 1", name="version"),
    sa.Index(None, "tenant_id", "status"),
)

# Conversations that support a learned procedure version, each once.
procedure_support = sa.Table(
    "procedure_support",
    metadata,
    sa.Column(
        "procedure_id",
        sa.String(64),
        sa.ForeignKey("procedures.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("conversation_id", sa.String(200), primary_key=True),
    sa.Column("added_at", UtcDateTime(), nullable=False),
)
