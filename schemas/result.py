"""AnalysisResult: what one analyzer run on one conversation produced."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, Field, NonNegativeFloat, NonNegativeInt, model_validator

from schemas._base import Contract
from schemas.procedure_execution import ProcedureExecution
from schemas.usage import Cost, Usage

RunStatus = Literal["succeeded", "failed", "skipped"]


class RecordedOutput(Contract):
    """One value recorded through an output-recording tool.

    `unknown` is a first-class answer: the agent looked and the conversation does not say. Then
    `value` is null and `unknown_reason` says why. `evidence_turns` are the turn numbers (0-based
    positions in the conversation's `turns`) the value rests on; `evidence_events` the event
    numbers (0-based positions in its `events`), since the proof of a refund or a created record
    lives in an event rather than in what was said.
    """

    value: Any = None
    unknown: bool = False
    unknown_reason: str | None = None
    evidence_turns: list[NonNegativeInt] = Field(default_factory=list)
    evidence_events: list[NonNegativeInt] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unknown_has_no_value(self) -> RecordedOutput:
        if self.unknown and self.value is not None:
            raise ValueError("an unknown output has no value")
        return self


class WriteEffect(Contract):
    """What became of one write-effect HTTP call (see `HttpTool.effect`).

    `idempotency_key` is the key the request carried (none for a dry run). `replayed`: the
    outcome was recorded by an earlier attempt of this run and is shown again without calling.
    `resent`: an earlier attempt sent it but its outcome was never recorded (the process died or
    the answer was lost), so it was sent again with the same key for the server to deduplicate.
    `dry_run`: the request was described, not made.
    """

    idempotency_key: str | None = None
    replayed: bool = False
    resent: bool = False
    dry_run: bool = False


class ToolCallRecord(Contract):
    """One tool call made during the run, with the procedure step it served, if any."""

    tool_name: str
    tool_use_id: str | None = None
    kind: Literal["builtin", "http", "output", "procedure"] = "builtin"
    input: dict[str, Any] = Field(default_factory=dict)
    output: Any = None
    succeeded: bool
    error: str | None = None
    duration_ms: NonNegativeFloat = 0.0
    started_at: AwareDatetime | None = None
    procedure_name: str | None = None
    procedure_step_order: NonNegativeInt | None = None
    effect: WriteEffect | None = None


class RunError(Contract):
    """Why a run failed. `type` is a stable code (`missing_outputs`, `deadline_exceeded`,
    `model_refused`, `transient_model_error`, ...); `retryable` says whether a retry may help.
    """

    type: str
    message: str
    retryable: bool = False


class Provenance(Contract):
    """Enough to tell which program produced a result, and whether it is stale."""

    analyzer_version: str
    model: str | None = None
    spec_hash: str | None = Field(
        default=None,
        description="sha256 of the analyzer snapshot the run executed: spec, resolved "
        "procedures, brief and tool definitions (see `schemas.snapshot`).",
    )
    prompt_hash: str | None = Field(
        default=None,
        description="sha256 of the prompt prefix and the analyzer's first message (its brief).",
    )
    transcript_hash: str | None = Field(default=None, description="sha256 of the conversation.")
    posthoc_version: str | None = None


class Timings(Contract):
    """When the run happened and where its time went."""

    started_at: AwareDatetime
    finished_at: AwareDatetime
    model_seconds: NonNegativeFloat = 0.0
    tool_seconds: NonNegativeFloat = 0.0

    @model_validator(mode="after")
    def _finished_after_started(self) -> Timings:
        if self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        return self

    @property
    def duration_seconds(self) -> float:
        """Wall-clock time of the run."""
        return (self.finished_at - self.started_at).total_seconds()


class AnalysisResult(Contract):
    """The outcome of one analyzer run on one conversation."""

    run_id: str
    conversation_id: str
    tenant_id: str | None = None
    analyzer: str
    analyzer_version: str
    status: RunStatus
    outputs: dict[str, list[RecordedOutput]] = Field(
        default_factory=dict,
        description="Recorded values by output name. Every output the analyzer declares is "
        "present, also on a failed run (holding what was recorded before the failure): an empty "
        "list when nothing was recorded, whatever the cardinality; an output of cardinality one "
        "has at most one value. So routing reads `size(outputs.x) > 0` and then "
        "`outputs.x[0].value`, and never meets a missing key or a null.",
    )
    trace: list[ToolCallRecord] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    cost: Cost = Field(default_factory=Cost)
    model: str | None = None
    model_turns: NonNegativeInt = 0
    timings: Timings | None = None
    truncated: bool = Field(
        default=False, description="True when the conversation was too long to read whole."
    )
    skip_reason: str | None = None
    error: RunError | None = None
    provenance: Provenance | None = None
    procedures: list[ProcedureExecution] = Field(
        default_factory=list,
        description="The procedures the analyzer names: applied or not, why, and what ran.",
    )

    @model_validator(mode="after")
    def _status_matches_details(self) -> AnalysisResult:
        if (self.status == "failed") != (self.error is not None):
            raise ValueError("a failed result has an error, and only a failed one")
        if (self.status == "skipped") != (self.skip_reason is not None):
            raise ValueError("a skipped result has a skip_reason, and only a skipped one")
        return self
