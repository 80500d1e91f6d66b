"""What a run did with the procedures its analyzer names: the execution record in a result.

For every procedure the analyzer names: whether it applies to the conversation, which path
decided it (the scope, a trigger condition, the event log, a trigger pattern or the model reading
the trigger description) and why. For an applied structured procedure, also each step: whether
it ran, the branch an `if` took, the arguments a tool step was called with, its result, and the
value of every placeholder it used with where that value came from.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from schemas._base import Contract

MatchPath = Literal["scope", "condition", "event_log", "pattern", "description", "undefined"]
"""What decided whether a procedure applies: `scope` (not approved, another tenant or agent),
`condition` (a trigger condition), `event_log` (the agent's event log names it), `pattern` (a
trigger pattern matches what the customer said), `description` (the model read the trigger
description), `undefined` (no procedure of that name is available)."""

ValueSource = Literal[
    "conversation_variable", "model", "step_result", "default", "system_variable", "missing"
]
"""Where a value a step used came from; `missing` when nothing supplied it."""


class SourcedValue(Contract):
    """A parameter or placeholder value, and where it came from."""

    name: str
    value: Any = None
    source: ValueSource


class StepExecution(Contract):
    """One step of a structured procedure, as the run walked it.

    `order` numbers steps as the procedure's outline does (nested steps after their `if`).
    A step that did not run says why in `not_run_reason` (its `if` was false, the procedure had
    stopped, a required parameter was missing). `status` of a tool step: `succeeded` (including
    a `null` result, such as a lookup that found nothing), `failed`, or `not_runnable`.
    """

    order: PositiveInt
    kind: Literal["instruction", "tool", "if"]
    ran: bool
    status: Literal["succeeded", "failed", "not_runnable", "skipped", "done"] = "done"
    not_run_reason: str | None = None
    tool: str | None = None
    result_name: str | None = None
    arguments: dict[str, Any] | None = None
    result: Any = None
    error: str | None = None
    condition: str | None = None
    branch: Literal["taken", "not_taken"] | None = None
    decided_by: Literal["expression", "model"] | None = None
    inputs: list[SourcedValue] = Field(default_factory=list)


class ProcedureExecution(Contract):
    """One procedure the analyzer names: whether it applied, and what the run did with it.

    `status`: `not_applied`; `in_brief` (an applied free-form procedure: its guidance went into
    the brief); `completed` or `stopped` (a structured one, which stopped at `stopped_at` when a
    step failed or could not run).
    """

    name: str
    version: PositiveInt | None = None
    form: Literal["free_form", "structured"] | None = None
    applies: bool
    path: MatchPath
    reason: str
    status: Literal["not_applied", "in_brief", "completed", "stopped", "not_started"] = (
        "not_applied"
    )
    stopped_at: NonNegativeInt | None = None
    parameters: list[SourcedValue] = Field(default_factory=list)
    steps: list[StepExecution] = Field(default_factory=list)
