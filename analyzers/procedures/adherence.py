"""Adherence, pure: a procedure and the agent's event log -> what the agent did with each step.

Everything the event log can decide is decided here, deterministically; the model only judges
what needs reading (instruction steps and natural-language conditions), and its answers come in
as `judged`, restricted to the statuses such a step can have. No I/O, no model.

- A **tool step** is `done` when a tool-call event of that tool has arguments equal to the
  step's template, each `{{param}}` bound to one value consistently across steps (the first
  matching call binds it; a conversation dynamic variable of the same name binds it up front;
  `{{step.result...}}` must equal what that step's call returned); `done_out_of_order` when that
  call comes before the call of an earlier step; `wrong_parameters` when the tool was called
  but never with matching arguments; `skipped` when it was never called.
- An **`if` with an expression** is evaluated with the existing CEL engine (and its limits) on
  the results the event log records for earlier tool steps (`vendor_lookup.result == null`).
  When it holds, its nested steps are expected like any other; when it does not, they are
  `skipped_condition_false`, and the `if` itself is `skipped_condition_false` when the agent
  honoured that, or `skipped` when it ran the excluded branch anyway (it skipped the check).
  An `if` that reads the result of a step the agent never ran is `not_verifiable`.
- A **natural-language `if`** is decided by the model's judgement of the `if` step (`done`:
  it held; `skipped_condition_false`: it did not); the nested tool steps are then decided here.

Verdict: `deviated` when any step was skipped (unless optional), out of order, called with wrong
parameters, or run against its condition; else `followed` when at least one step could be
checked; else `unknown`. `not_applicable` when there is no procedure. The score is the share of
checkable steps done (half for out of order); steps rightly skipped by a false condition, optional
steps not done and unverifiable steps are not counted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from analyzers.definitions.expressions import ExpressionError, compile_expression
from analyzers.procedures.tool_calls import (
    ToolCall,
    differing_keys,
    match_arguments,
    tool_calls,
)
from schemas.conversation import Event
from schemas.outputs import StepStatus, StepVerdict
from schemas.procedure import IfStep, InstructionStep, Procedure, ToolStep

StepKind = Literal["instruction", "tool", "if"]
Verdict = Literal["followed", "deviated", "not_applicable", "unknown"]
DecidedBy = Literal["event_log", "model"]

MODEL_STATUSES: dict[StepKind, frozenset[str]] = {
    "instruction": frozenset({"done", "done_out_of_order", "skipped", "not_verifiable"}),
    "if": frozenset({"done", "skipped_condition_false", "not_verifiable"}),
    "tool": frozenset(),
}
"""What the model may say about the steps it judges; anything else is read as not_verifiable."""

NOTE_LIMIT = 500
"""Characters of the model's note kept per step."""


@dataclass(frozen=True)
class StepOutcome:
    """One step's status, the event that shows it, and whether the log or the model decided."""

    step: str
    kind: StepKind
    status: StepStatus
    decided_by: DecidedBy
    event_index: int | None = None
    evidence_turns: tuple[int, ...] = ()
    note: str = ""
    optional: bool = False

    def verdict(self) -> StepVerdict:
        """As the `adherence` output shows it."""
        return StepVerdict(
            step=self.step,
            kind=self.kind,
            status=self.status,
            event_index=self.event_index,
            evidence_turns=list(self.evidence_turns),
            note=self.note,
        )


@dataclass(frozen=True)
class AdherenceReport:
    """Every step's outcome, the verdict and the score, for one procedure (or none)."""

    procedure: str
    procedure_version: int | None
    steps: tuple[StepOutcome, ...]
    verdict: Verdict
    score: float

    def for_model(self) -> list[StepOutcome]:
        """The steps the model is asked to judge."""
        return [outcome for outcome in self.steps if outcome.decided_by == "model"]

    def output_value(self) -> dict[str, Any]:
        """The `adherence` output's value."""
        return {
            "procedure": self.procedure,
            "procedure_version": self.procedure_version,
            "verdict": self.verdict,
            "score": self.score,
            "steps": [outcome.verdict().model_dump() for outcome in self.steps],
        }


NOT_APPLICABLE = AdherenceReport("", None, (), "not_applicable", 0.0)
"""The report when the agent had no procedure to follow."""


def check_adherence(
    procedure: Procedure,
    events: Sequence[Event],
    *,
    variables: Mapping[str, Any] | None = None,
    judged: Iterable[StepVerdict] = (),
) -> AdherenceReport:
    """Decide every step of `procedure` from `events` (see the module docstring).

    `variables` are the conversation's dynamic variables (a parameter of the same name is bound
    to its value up front); `judged` the model's verdicts on the steps it was asked to judge.
    """
    walk = _Walk(tool_calls(events), dict(variables or {}), {v.step: v for v in judged})
    if procedure.steps is None:
        # A free-form procedure is one instruction: only reading can tell whether it was followed.
        walk.outcomes.append(walk.instruction("1", optional=False))
    else:
        for position, step in enumerate(procedure.steps, start=1):
            walk.step(str(position), step)
    outcomes = tuple(walk.outcomes)
    verdict, score = _verdict(outcomes)
    return AdherenceReport(procedure.name, procedure.version, outcomes, verdict, score)


@dataclass
class _Walk:
    """The state of one pass over the procedure: calls used, parameters bound, results seen."""

    calls: list[ToolCall]
    bindings: dict[str, Any]
    judged: dict[str, StepVerdict]
    results: dict[str, ToolCall] = field(default_factory=dict)
    used: set[int] = field(default_factory=set)
    latest: int = -1
    outcomes: list[StepOutcome] = field(default_factory=list)

    def step(self, number: str, step: InstructionStep | ToolStep | IfStep) -> None:
        if isinstance(step, ToolStep):
            self.outcomes.append(self.tool(number, step))
        elif isinstance(step, InstructionStep):
            self.outcomes.append(self.instruction(number, optional=step.optional))
        else:
            self.branch(number, step)

    def instruction(self, number: str, *, optional: bool) -> StepOutcome:
        return self._model_judged(number, "instruction", optional=optional)

    def tool(self, number: str, step: ToolStep) -> StepOutcome:
        candidates = [c for c in self.calls if c.tool == step.tool and c.index not in self.used]
        # Prefer a call after the steps before it; an earlier one is out of order.
        ordered = [c for c in candidates if c.index > self.latest] + [
            c for c in candidates if c.index <= self.latest
        ]
        for call in ordered:
            bound = match_arguments(step.arguments, call.arguments, self.bindings, self.results)
            if bound is None:
                continue
            self.used.add(call.index)
            self.bindings = bound
            self.results[step.result_name] = call
            in_order = call.index > self.latest
            self.latest = max(self.latest, call.index)
            failed = " (the call failed)" if call.succeeded is False else ""
            if in_order:
                return self._decided(number, "tool", "done", call.index, f"e{call.index}{failed}")
            return self._decided(
                number,
                "tool",
                "done_out_of_order",
                call.index,
                f"called at e{call.index}, before an earlier step's call{failed}",
            )
        if ordered:
            call = ordered[0]
            self.used.add(call.index)
            self.results[step.result_name] = call  # a later condition may still read it
            differing = differing_keys(step.arguments, call.arguments, self.bindings, self.results)
            return self._decided(
                number,
                "tool",
                "wrong_parameters",
                call.index,
                f"{step.tool} was called (e{call.index}) with other arguments"
                + (f": {', '.join(differing)} differ" if differing else ""),
                optional=step.optional,
            )
        return self._decided(
            number,
            "tool",
            "skipped",
            None,
            f"{step.tool} was never called" + (" (optional step)" if step.optional else ""),
            optional=step.optional,
        )

    def branch(self, number: str, step: IfStep) -> None:
        holds, why = self.condition(number, step)
        first = len(self.outcomes)
        self.outcomes.append(_placeholder(number))
        excluded_calls: list[int] = []
        for position, nested in enumerate(step.steps, start=1):
            nested_number = f"{number}.{position}"
            if holds is False:
                excluded = self._excluded(nested_number, nested, why)
                self.outcomes.append(excluded)
                if excluded.event_index is not None:
                    excluded_calls.append(excluded.event_index)
            else:
                self.step(nested_number, nested)
                done = self.outcomes[-1]
                if holds is None and done.status == "skipped":
                    # Not done, but whether it was due is as unknown as its condition.
                    self.outcomes[-1] = replace(
                        done, status="not_verifiable", note=f"{done.note}; {why}"
                    )
        self.outcomes[first] = self._branch_outcome(number, step, holds, why, excluded_calls)

    def condition(self, number: str, step: IfStep) -> tuple[bool | None, str]:
        """Whether the `if` held, and a note saying how that was decided."""
        if step.condition.expression is None:
            judged = self.judged.get(number)
            status = judged.status if judged is not None else "not_verifiable"
            if status == "done":
                return True, "the condition held (judged from the conversation)"
            if status == "skipped_condition_false":
                return False, "the condition did not hold (judged from the conversation)"
            return None, "whether the condition held could not be told"
        return self.evaluate(step.condition.expression)

    def evaluate(self, source: str) -> tuple[bool | None, str]:
        try:
            expression = compile_expression(source)
        except ExpressionError as exc:
            return None, f"the condition could not be evaluated: {exc}"
        values: dict[str, Any] = {
            name: value for name, value in self.bindings.items() if _is_name(name)
        }
        for name, call in self.results.items():
            values[name] = {
                "result": call.result,
                "arguments": call.arguments,
                "succeeded": call.succeeded,
            }
        missing = sorted(name for name in expression.variables if name not in values)
        if missing:
            return None, f"the condition reads {', '.join(missing)}, which the event log lacks"
        try:
            holds = expression.holds(values)
        except ExpressionError as exc:
            return None, f"the condition could not be evaluated: {exc}"
        read = sorted(
            f"e{self.results[name].index}" for name in expression.variables if name in self.results
        )
        source_note = f" on {', '.join(read)}" if read else ""
        return holds, f"{source} is {'true' if holds else 'false'}{source_note}"

    def _excluded(
        self, number: str, step: InstructionStep | ToolStep | IfStep, why: str
    ) -> StepOutcome:
        """A nested step of an `if` that did not hold: not expected. A tool step the agent ran
        anyway names the call."""
        kind: StepKind = "tool" if isinstance(step, ToolStep) else "instruction"
        if isinstance(step, ToolStep):
            ran = [c for c in self.calls if c.tool == step.tool and c.index not in self.used]
            if ran:
                self.used.add(ran[0].index)
                self.results[step.result_name] = ran[0]
                return self._decided(
                    number,
                    kind,
                    "skipped_condition_false",
                    ran[0].index,
                    f"not expected ({why}), but the agent called {step.tool} anyway "
                    f"(e{ran[0].index})",
                )
        return self._decided(number, kind, "skipped_condition_false", None, f"not expected: {why}")

    def _branch_outcome(
        self,
        number: str,
        step: IfStep,
        holds: bool | None,
        why: str,
        excluded_calls: list[int],
    ) -> StepOutcome:
        by: DecidedBy = "event_log" if step.condition.expression is not None else "model"
        judged = self.judged.get(number) if by == "model" else None
        turns = tuple(judged.evidence_turns) if judged is not None else ()
        if holds is None:
            return StepOutcome(number, "if", "not_verifiable", by, None, turns, why)
        if holds:
            return StepOutcome(number, "if", "done", by, None, turns, why)
        if excluded_calls:
            calls = ", ".join(f"e{index}" for index in excluded_calls)
            return StepOutcome(
                number,
                "if",
                "skipped",
                by,
                excluded_calls[0],
                turns,
                f"{why}, yet the agent ran the steps it excludes ({calls})",
            )
        return StepOutcome(number, "if", "skipped_condition_false", by, None, turns, why)

    def _model_judged(self, number: str, kind: StepKind, *, optional: bool) -> StepOutcome:
        judged = self.judged.get(number)
        if judged is None or judged.status not in MODEL_STATUSES[kind]:
            return StepOutcome(
                number, kind, "not_verifiable", "model", note="not judged", optional=optional
            )
        return StepOutcome(
            number,
            kind,
            judged.status,
            "model",
            judged.event_index,
            tuple(judged.evidence_turns),
            judged.note[:NOTE_LIMIT],
            optional,
        )

    def _decided(
        self,
        number: str,
        kind: StepKind,
        status: StepStatus,
        event_index: int | None,
        note: str,
        *,
        optional: bool = False,
    ) -> StepOutcome:
        return StepOutcome(number, kind, status, "event_log", event_index, (), note, optional)


def _placeholder(number: str) -> StepOutcome:
    # Keeps the `if` before its nested steps in the list; replaced once they are decided.
    return StepOutcome(number, "if", "not_verifiable", "event_log")


def _verdict(outcomes: Sequence[StepOutcome]) -> tuple[Verdict, float]:
    counted = 0
    credit = 0.0
    deviated = False
    for outcome in outcomes:
        status = outcome.status
        if status == "not_verifiable":
            continue
        if status == "skipped_condition_false" and outcome.kind != "if":
            continue
        if status == "skipped" and outcome.optional:
            continue
        counted += 1
        if status in ("done", "skipped_condition_false"):
            credit += 1.0
        elif status == "done_out_of_order":
            credit += 0.5
            deviated = True
        else:
            deviated = True
    if counted == 0:
        return "unknown", 0.0
    return ("deviated" if deviated else "followed"), round(credit / counted, 4)


def _is_name(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is not None
