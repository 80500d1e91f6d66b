"""Runtime support for an analyzer with a `procedure_candidate` output (the built-in
`procedure_capture`): the steps come from the event log, the words from the model.

- Before the model: the steps and argument templates are captured from the event log
  (`analyzers.procedures.capture`). Fewer than two successful tool calls, or an active
  procedure of the agent that already covers them (same trigger, same tools up to optional
  steps), and there is nothing to propose: the output is recorded `unknown` with the reason and
  the model is not called.
- The model is shown the numbered steps and writes the name, trigger description, patterns,
  description and instruction texts.
- The output's value is the model's words plus `procedure`: the complete learned (pending)
  procedure, which the worker hands to the procedure store (`analyzers.procedures.candidates`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from analyzers.procedures.capture import (
    Captured,
    candidate_procedure,
    capture_steps,
    find_duplicate,
)
from analyzers.procedures.recall import active_procedures
from analyzers.runtime.output_tools import OutputRecorder
from schemas.analyzer import AnalyzerSpec, OutputSpec
from schemas.conversation import Conversation
from schemas.outputs import ProcedureCandidate
from schemas.procedure import Procedure
from schemas.result import RecordedOutput

CANDIDATE_MODEL = "procedure_candidate"
"""The output model whose outputs this module settles."""

PROVISIONAL_NAME = "captured_candidate"
"""The name of the candidate before the model named it (for the coverage check only)."""


def candidate_output(spec: AnalyzerSpec) -> OutputSpec | None:
    """The analyzer's `procedure_candidate` output, if it has one."""
    return next((o for o in spec.outputs if o.model == CANDIDATE_MODEL), None)


def customer_text(conversation: Conversation) -> str:
    """What the customer said, one turn a line (for trigger patterns)."""
    return "\n".join(turn.text for turn in conversation.turns if turn.role == "user")


@dataclass(frozen=True)
class CapturePlan:
    """The captured steps, or why there is nothing to propose."""

    output: OutputSpec
    captured: Captured | None
    reason: str
    conversation: Conversation = field(repr=False)

    @property
    def needs_model(self) -> bool:
        return self.captured is not None

    def brief(self) -> str:
        """The steps the model writes words for."""
        if self.captured is None:
            return f"There is nothing to capture ({self.reason})."
        lines = ["## The steps captured from the event log"]
        for number, step in self.captured.numbered():
            arguments = json.dumps(step.arguments, ensure_ascii=False, sort_keys=True)
            lines.append(f"{number}. call {step.tool} with {arguments} (event e{step.event_index})")
        if self.captured.condition is not None:
            branch = self.captured.branch_after + 2 if self.captured.branch_after is not None else 0
            lines.append(f"Steps {branch}.x run only if {self.captured.condition}.")
        if self.captured.parameters:
            lines.append("Parameters: " + ", ".join(self.captured.parameters))
        return "\n".join(lines)

    def settle(self, recorded: Sequence[RecordedOutput]) -> RecordedOutput:
        """The model's words with the complete candidate procedure, or unknown with why."""
        if self.captured is None:
            return RecordedOutput(unknown=True, unknown_reason=self.reason)
        if not recorded or recorded[-1].unknown or not isinstance(recorded[-1].value, dict):
            return RecordedOutput(
                unknown=True, unknown_reason="the model wrote no name and trigger for it"
            )
        try:
            # Settling is idempotent: a settled value carries `procedure`, which is ours.
            said = {k: v for k, v in recorded[-1].value.items() if k != "procedure"}
            words = ProcedureCandidate.model_validate(said)
            procedure = candidate_procedure(
                self.captured,
                self.conversation,
                name=slug(words.name),
                trigger_description=words.trigger_description,
                patterns=words.patterns,
                description=words.description,
                instructions={i.step: i.instruction for i in words.instructions},
            )
        except ValidationError as exc:
            return RecordedOutput(
                unknown=True,
                unknown_reason=f"the candidate is not a sound procedure: {_first_error(exc)}",
            )
        value = {
            **words.model_dump(mode="json"),
            "procedure": procedure.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        return RecordedOutput(
            value=value,
            evidence_turns=recorded[-1].evidence_turns,
            evidence_events=[step.event_index for step in self.captured.steps],
        )

    def settle_into(self, recorder: OutputRecorder) -> None:
        """Replace whatever was recorded for the output with the settled value."""
        recorded = recorder.recorded.get(self.output.name, [])
        recorder.recorded[self.output.name] = [self.settle(recorded)]


def capture_plan(
    spec: AnalyzerSpec, conversation: Conversation, procedures: Sequence[Procedure]
) -> CapturePlan | None:
    """The plan for an analyzer with a `procedure_candidate` output; None for any other."""
    output = candidate_output(spec)
    if output is None:
        return None
    captured = capture_steps(conversation)
    if captured is None:
        return CapturePlan(output, None, "fewer than two successful tool calls", conversation)
    try:
        provisional = candidate_procedure(
            captured, conversation, name=PROVISIONAL_NAME, trigger_description="(not yet written)"
        )
    except ValidationError as exc:
        # The capture rules should make this impossible; a conversation must not crash the run.
        reason = f"the captured steps are not a sound procedure: {_first_error(exc)}"
        return CapturePlan(output, None, reason, conversation)
    active = active_procedures(procedures, conversation.tenant_id, conversation.agent_id)
    covering = find_duplicate(provisional, active, customer_text(conversation))
    if covering is not None and covering.kind == "support":
        existing = covering.existing
        reason = f"the approved procedure {existing.name} v{existing.version} already covers it"
        return CapturePlan(output, None, reason, conversation)
    return CapturePlan(output, captured, "", conversation)


def slug(name: str) -> str:
    """A procedure name from the model's: lower_snake_case, starting with a letter."""
    text = re.sub(r"[^a-z0-9]+", "_", name.casefold()).strip("_")
    if not text or not text[0].isalpha():
        text = f"procedure_{text}".strip("_")
    return text[:64].rstrip("_")


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg"))
