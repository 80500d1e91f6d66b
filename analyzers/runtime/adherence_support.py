"""Runtime support for an analyzer with an `adherence` output (the built-in
`procedure_adherence`): which procedure the agent was meant to follow, what the model is asked,
and the final output, in which the event log's decisions always win.

- **The procedure**: the one the event log names (`procedure_name` on an event, or a
  `procedure_started`/`procedure_finished` event), recalled among the procedures handed to the
  run (the agent's active ones: approved, its tenant, its own or shared); else the one whose
  trigger a customer turn matches (FindMatch: patterns, then description words). None: the
  output is `not_applicable`.
- **The model** is shown the procedure as numbered steps and the statuses the runtime already
  decided, and asked only about instruction steps and natural-language conditions. When there
  are none (or no procedure), the model is not called at all.
- **The output** is rebuilt from the event log with the model's judgements of those steps only:
  whatever the model recorded for a tool step or an expression is discarded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from analyzers.procedures.adherence import (
    NOT_APPLICABLE,
    AdherenceReport,
    check_adherence,
)
from analyzers.procedures.matching import PROCEDURE_EVENTS
from analyzers.procedures.recall import active_procedures, find_match, recall
from analyzers.runtime.output_tools import OutputRecorder
from schemas.analyzer import AnalyzerSpec, OutputSpec
from schemas.conversation import Conversation, Event
from schemas.outputs import StepVerdict
from schemas.procedure import IfStep, InstructionStep, Procedure, ToolStep
from schemas.result import RecordedOutput

ADHERENCE_MODEL = "adherence"
"""The output model whose outputs this module settles."""

MATCHED_TURNS = 20
"""Customer turns tried, in order, when no event names the procedure."""

MAX_JUDGED_STEPS = 200
"""Step verdicts of the model's recording that are read at all."""


def adherence_output(spec: AnalyzerSpec) -> OutputSpec | None:
    """The analyzer's `adherence` output, if it has one."""
    return next((o for o in spec.outputs if o.model == ADHERENCE_MODEL), None)


def agents_procedure(
    conversation: Conversation, procedures: Sequence[Procedure]
) -> tuple[Procedure | None, str]:
    """The procedure the agent was meant to follow, and how it was found (or why none was)."""
    tenant, agent = conversation.tenant_id, conversation.agent_id
    for index, event in enumerate(conversation.events):
        name = event.procedure_name or (event.name if event.type in PROCEDURE_EVENTS else None)
        if not name:
            continue
        found = recall(procedures, name, tenant, agent)
        if found is not None:
            return found, f"the event log names it (event e{index})"
        return None, f"the event log names {name!r} (event e{index}), which is not active here"
    for index, turn in enumerate(conversation.turns):
        if turn.role != "user":
            continue
        match = find_match(procedures, turn.text, tenant, agent)
        if match is not None:
            return match.procedure, f"turn {index}: {match.reason}"
        if index >= MATCHED_TURNS * 2:
            break
    return None, "no event names a procedure and no active procedure's trigger matches"


def agent_procedures_for_snapshot(
    conversation: Conversation, procedures: Sequence[Procedure]
) -> list[Procedure]:
    """What an adherence analyzer's snapshot freezes: the agent's active procedures."""
    return active_procedures(procedures, conversation.tenant_id, conversation.agent_id)


@dataclass(frozen=True)
class AdherencePlan:
    """The procedure, how it was found, and what the event log alone decides."""

    output: OutputSpec
    procedure: Procedure | None
    found_by: str
    decided: AdherenceReport
    variables: dict[str, Any] = field(repr=False)
    events: tuple[Event, ...] = field(repr=False, default=())

    @property
    def needs_model(self) -> bool:
        """Whether any step needs reading (else the model is not called)."""
        return self.procedure is not None and bool(self.decided.for_model())

    def brief(self) -> str:
        """What the model is told: the procedure, the decided steps, the steps to judge."""
        if self.procedure is None:
            return (
                f"The agent had no procedure to follow here ({self.found_by}). Record "
                f"{self.output.name} with an empty steps list."
            )
        decided = [o for o in self.decided.steps if o.decided_by == "event_log"]
        asked = self.decided.for_model()
        lines = [
            f"## The agent's procedure: {self.procedure.name} version {self.procedure.version}",
            f"Found because {self.found_by}. It was the agent's instructions, not yours: judge "
            "whether the agent followed it.",
            "",
            *numbered_outline(self.procedure),
            "",
            "Decided from the event log (final; do not judge these):",
            *(f"- step {o.step} ({o.kind}): {o.status}: {o.note}" for o in decided),
            "",
            "Judge only these steps, from the transcript: "
            + ", ".join(f"{o.step} ({o.kind})" for o in asked)
            + ". An instruction step: done, done_out_of_order, skipped, or not_verifiable when "
            "the conversation does not let you tell. A natural-language `if`: done when its "
            "condition held, skipped_condition_false when it did not, not_verifiable. Cite "
            f"evidence_turns for each. Record {self.output.name} once, with one entry in steps "
            "per step you judge; the runtime fills in the rest.",
        ]
        return "\n".join(lines)

    def settle(self, recorded: Sequence[RecordedOutput]) -> RecordedOutput:
        """The final output: the event log's decisions with the model's judgements of the
        steps it was asked about (anything else it said is ignored)."""
        if self.procedure is None:
            return RecordedOutput(value=NOT_APPLICABLE.output_value())
        judged = _judgements(recorded)
        report = check_adherence(
            self.procedure,
            self.events,
            variables=self.variables,
            judged=judged,
        )
        turns = sorted({turn for o in report.steps for turn in o.evidence_turns})
        events = sorted({o.event_index for o in report.steps if o.event_index is not None})
        return RecordedOutput(
            value=report.output_value(), evidence_turns=turns, evidence_events=events
        )

    def settle_into(self, recorder: OutputRecorder) -> None:
        """Replace whatever was recorded for the output with the settled value."""
        recorded = recorder.recorded.get(self.output.name, [])
        recorder.recorded[self.output.name] = [self.settle(recorded)]


def adherence_plan(
    spec: AnalyzerSpec, conversation: Conversation, procedures: Sequence[Procedure]
) -> AdherencePlan | None:
    """The plan for an analyzer with an `adherence` output; None for any other analyzer."""
    output = adherence_output(spec)
    if output is None:
        return None
    procedure, found_by = agents_procedure(conversation, procedures)
    variables = dict(conversation.dynamic_variables)
    decided = (
        NOT_APPLICABLE
        if procedure is None
        else check_adherence(procedure, conversation.events, variables=variables)
    )
    return AdherencePlan(
        output, procedure, found_by, decided, variables, tuple(conversation.events)
    )


def numbered_outline(procedure: Procedure) -> list[str]:
    """The procedure's steps numbered as the adherence output numbers them (`3`, `3.1`)."""
    if procedure.steps is None:
        return [f"1. (the whole procedure) {(procedure.content or '').strip()}"]
    lines = []
    for position, step in enumerate(procedure.steps, start=1):
        lines.append(f"{position}. {_describe(step)}")
        if isinstance(step, IfStep):
            for inner, nested in enumerate(step.steps, start=1):
                lines.append(f"   {position}.{inner}. {_describe(nested)}")
    return lines


def _describe(step: InstructionStep | ToolStep | IfStep) -> str:
    if isinstance(step, InstructionStep):
        return step.instruction + (" (optional)" if step.optional else "")
    if isinstance(step, ToolStep):
        arguments = json.dumps(step.arguments, ensure_ascii=False, sort_keys=True)
        text = f"call {step.tool} with {arguments}"
        return text + (f": {step.instruction}" if step.instruction else "")
    condition = step.condition.expression or step.condition.natural_language
    return f"if {condition}:"


def _judgements(recorded: Sequence[RecordedOutput]) -> list[StepVerdict]:
    """The model's step verdicts, each read on its own: one malformed entry loses only itself."""
    if not recorded or recorded[-1].unknown or not isinstance(recorded[-1].value, dict):
        return []
    steps = recorded[-1].value.get("steps")
    if not isinstance(steps, list):
        return []
    verdicts = []
    for entry in steps[:MAX_JUDGED_STEPS]:
        try:
            verdicts.append(StepVerdict.model_validate(entry))
        except ValidationError:
            continue
    return verdicts
