"""Outputs the runtime settles itself: an `adherence` output (decided from the event log) and a
`procedure_candidate` output (steps from the event log). Each has a plan made before the model
runs: what the model is told, whether it is needed at all, and how the final value is built
from what it recorded (`settle_into`, after every model turn that may have recorded it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from analyzers.runtime.adherence_support import adherence_plan
from analyzers.runtime.capture_support import capture_plan
from analyzers.runtime.output_tools import OutputRecorder
from schemas.analyzer import AnalyzerSpec, OutputSpec
from schemas.conversation import Conversation
from schemas.procedure import Procedure
from schemas.result import RecordedOutput


class OutputPlan(Protocol):
    """A runtime-settled output's plan."""

    @property
    def output(self) -> OutputSpec: ...

    @property
    def needs_model(self) -> bool: ...

    def brief(self) -> str: ...

    def settle(self, recorded: Sequence[RecordedOutput]) -> RecordedOutput: ...

    def settle_into(self, recorder: OutputRecorder) -> None: ...


def output_plans(
    spec: AnalyzerSpec, conversation: Conversation, procedures: Sequence[Procedure]
) -> list[OutputPlan]:
    """The plans of `spec`'s runtime-settled outputs (none for most analyzers)."""
    plans: list[OutputPlan] = []
    adherence = adherence_plan(spec, conversation, procedures)
    if adherence is not None:
        plans.append(adherence)
    capture = capture_plan(spec, conversation, procedures)
    if capture is not None:
        plans.append(capture)
    return plans


def model_needed(spec: AnalyzerSpec, plans: Sequence[OutputPlan]) -> bool:
    """False when every output is runtime-settled and none needs reading."""
    settled = {plan.output.name for plan in plans}
    others = [output for output in spec.outputs if output.name not in settled]
    return bool(others) or any(plan.needs_model for plan in plans)
