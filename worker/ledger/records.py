"""What the ledger hands back: plain frozen records, never live database rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

from schemas import Conversation
from schemas.snapshot import AnalyzerSnapshot

RunState = Literal["queued", "running", "succeeded", "failed", "skipped"]
"""Where a run is. A superset of `schemas.result.RunStatus`, which only knows finished runs."""

Trigger = Literal["webhook", "cli", "rerun", "schedule", "api", "invoke", "chain"]
"""What asked for the run (`api`: `POST /v1/conversations`; `invoke`: a synchronous
`POST /v1/analyzers/{name}/invoke`; `chain`: a parent run's outputs, see `after:`)."""

AttemptOutcome = Literal["succeeded", "failed", "retry", "lease_lost", "expired"]
"""How one claim of a run ended.

`expired`: the lease ran out and a later claim (or the sweeper) closed the attempt; the worker
never reported back, it probably died. `lease_lost`: the worker did report back (a heartbeat or a
completion) after the run had passed to someone else or been finished; its work was discarded.
"""

RetryOutcome = Literal["queued", "failed", "lease_lost"]
"""What `Ledger.retry_later` did: queued again, dead-lettered, or nothing (lease not held)."""

RUN_STATES: tuple[RunState, ...] = get_args(RunState)
TRIGGERS: tuple[Trigger, ...] = get_args(Trigger)
ATTEMPT_OUTCOMES: tuple[AttemptOutcome, ...] = get_args(AttemptOutcome)
FINISHED_STATES: tuple[RunState, ...] = ("succeeded", "failed", "skipped")


@dataclass(frozen=True, slots=True)
class ConversationRef:
    """A stored conversation.

    `created` is True the first time it is saved. `changed` is True when the stored transcript is
    new or differs from what was stored before: that is when triggers should be evaluated again.
    `version_id` and `version` name the content just saved among the conversation's versions
    (append-only: content seen before keeps its version number, new content gets the next one);
    runs recorded for it should pass `version_id` to `Ledger.record_runs`.
    """

    pk: int
    tenant_id: str
    conversation_id: str
    transcript_hash: str
    created: bool
    changed: bool
    version_id: int = 0
    version: int = 0


@dataclass(frozen=True, slots=True)
class ConversationVersion:
    """One content a conversation was received with (without the payload)."""

    id: int
    conversation_pk: int
    version: int
    content_hash: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class RunPlan:
    """One analysis run to record: run `analyzer`, or record that it was skipped and why."""

    analyzer: str
    analyzer_version: str
    skip_reason: str | None = None
    max_attempts: int = 3
    snapshot: AnalyzerSnapshot | None = field(default=None, compare=False)
    """What the run will execute, stored (once per content hash) with the run."""
    settle_seconds: float = 0.0
    """Hold the run back this long; a newer version of the conversation recorded meanwhile
    supersedes it (the analyzer's `trigger.settle_seconds`)."""

    def __post_init__(self) -> None:
        if not self.analyzer:
            raise ValueError("a run plan needs an analyzer name")
        if self.snapshot is not None and (
            self.snapshot.analyzer,
            self.snapshot.analyzer_version,
        ) != (self.analyzer, self.analyzer_version):
            raise ValueError(
                f"the snapshot of {self.snapshot.analyzer}@{self.snapshot.analyzer_version} "
                f"was planned for {self.analyzer}@{self.analyzer_version}"
            )
        if self.max_attempts < 1:
            raise ValueError(
                f"max_attempts for analyzer {self.analyzer!r} must be at least 1, "
                f"got {self.max_attempts}"
            )


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One analysis run as the ledger holds it (without its result; see `Ledger.results`).

    `created` is only meaningful from `record_runs`: False when an idempotency key matched a run
    recorded earlier, which is returned instead of a new one. The spend figures (`cost_usd`,
    `*_tokens`) are the sums over the run's attempts (see `Ledger.attempts`). The run executes
    the snapshot `spec_hash` on the conversation version `conversation_version_id` (both None
    only for runs recorded before revision 0002_pinned).
    """

    id: str
    conversation_pk: int
    analyzer: str
    analyzer_version: str
    status: RunState
    trigger: Trigger
    attempts: int
    max_attempts: int
    attempt_budget: int
    available_at: datetime
    created_at: datetime
    skip_reason: str | None = None
    idempotency_key: str | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_retryable: bool | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    rerun_of: str | None = None
    conversation_version_id: int | None = None
    spec_hash: str | None = None
    created: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """A run this worker now holds a lease on: what it needs to do the work.

    Pass `attempt` back to `heartbeat`/`complete`/`retry_later`/`fail` as a fencing token when
    the same worker id could claim one run twice (it then tells the two claims apart).
    """

    run_id: str
    conversation_pk: int
    analyzer: str
    analyzer_version: str
    trigger: Trigger
    attempt: int
    max_attempts: int
    worker_id: str
    lease_expires_at: datetime
    rerun_of: str | None = None
    conversation_version_id: int | None = None
    """The conversation version to analyse (None: recorded before versions; use the current)."""
    spec_hash: str | None = None
    """The snapshot to execute (None: recorded before snapshots; use the loaded analyzer)."""
    conversation: Conversation | None = field(default=None, repr=False, compare=False)
    """The content to analyse, read by the claim itself (None: read it with
    `Ledger.run_conversation`). Never in a repr: it is transcript text."""


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One claim of a run and how it ended (`outcome` is None while it is in progress)."""

    run_id: str
    attempt: int
    worker_id: str
    started_at: datetime
    finished_at: datetime | None
    outcome: AttemptOutcome | None
    error_type: str | None
    error_message: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did.

    `exhausted`: runs whose lease expired on their last attempt, now failed `attempts_exhausted`.
    `to_enqueue`: runs whose broker message may be lost (an expired lease with attempts left, or
    a run queued and claimable for a while); put their ids on the queue again. A duplicate
    message is harmless: only one claim can win.
    `reclaimed`: how many expired leases this sweep acted on (failed, or sent to be taken over).
    """

    exhausted: list[str]
    to_enqueue: list[str]
    reclaimed: int = 0
