"""Structured procedures run as a deterministic state machine inside a `Session`.

The runtime, not the model, walks the steps in order:
- parameters come from the conversation's dynamic variables of the same name; the rest are asked
  of the model in ONE turn (one `provide_parameters` call for all of them) before the first step
  that reads one, then fall back to their defaults; a required parameter still missing makes the
  steps that read it not runnable;
- a tool step is executed by the runtime with its argument template filled; a `null` result (a
  lookup that found nothing) is a result, not a failure;
- an expression condition is evaluated by the runtime (CEL); one that cannot be evaluated stops
  the procedure and is recorded in the trace, never taken as false;
- a natural-language condition is a model turn that must answer through `decide_condition`;
- an instruction step is a model turn.
A failing or not runnable step stops the procedure unless it is optional. What the runtime did
is told to the model in the next message, and recorded step by step in a `ProcedureExecution`.

The runner owns its state; the procedure tools keep none. It reads what the model gave them
from the session's trace: the inputs of the calls that succeeded during its own turns.
"""

from __future__ import annotations

import json
from typing import Any

from analyzers.definitions.expressions import (
    ExpressionError,
    compile_expression,
    conversation_variables,
)
from analyzers.procedures.steps import (
    AnyStep,
    NumberedStep,
    initial_parameters,
    input_sources,
    names_read,
    numbered_steps,
    settle_parameters,
)
from analyzers.procedures.tools import DECIDE_CONDITION, PROVIDE_PARAMETERS
from analyzers.runtime.session import Session, StepContext
from analyzers.tools.base import JSON
from analyzers.tools.template_fill import TemplateError, fill, fill_text
from schemas.procedure import IfStep, InstructionStep, Procedure, ToolStep
from schemas.procedure_execution import ProcedureExecution, SourcedValue, StepExecution
from schemas.result import ToolCallRecord

EVALUATE_CONDITION = "evaluate_condition"
"""How a condition the runtime evaluated appears in the trace when it could not be."""


class ProcedureRunner:
    """Walks one structured procedure's steps inside a `Session`, and records what it did."""

    def __init__(self, session: Session, procedure: Procedure) -> None:
        self.session = session
        self.procedure = procedure
        self.dynamic_variables = dict(session.conversation.dynamic_variables)
        self.parameters = initial_parameters(procedure, self.dynamic_variables)
        self.asked = False
        self.results: dict[str, dict[str, Any]] = {}
        self.steps: list[StepExecution] = []
        self.taken: dict[int, bool] = {}
        self.stopped_at: int | None = None
        self.finished = False
        self.pending: list[JSON] = []

    def execution(self, base: ProcedureExecution) -> ProcedureExecution:
        """`base` (the matching record) completed with what this runner did so far."""
        status = "stopped" if self.stopped_at is not None else "completed"
        if not self.finished and self.stopped_at is None:
            status = "stopped"
        return base.model_copy(
            update={
                "status": status,
                "stopped_at": self.stopped_at,
                "parameters": [
                    self.parameters.get(p.name)
                    or SourcedValue(name=p.name, value=None, source="missing")
                    for p in self.procedure.parameters
                ],
                "steps": list(self.steps),
            }
        )

    async def run(self, opening: list[JSON]) -> list[JSON]:
        """Run every step; return what is still to be told to the model afterwards."""
        self.pending = list(opening)
        self._note(f"Procedure {self.procedure.name} starts now.")
        try:
            for numbered in numbered_steps(self.procedure):
                await self._visit(numbered)
        finally:
            self.session.step = None
        self.finished = True
        if self.stopped_at is None:
            self._note(f"Procedure {self.procedure.name} is complete.")
        return self.pending

    async def _visit(self, numbered: NumberedStep) -> None:
        order, step = numbered.order, numbered.step
        if self.stopped_at is not None:
            self._skip(numbered, f"the procedure stopped at step {self.stopped_at}")
            return
        if numbered.parent is not None and not self.taken.get(numbered.parent, False):
            self._skip(numbered, f"the condition of step {numbered.parent} does not hold")
            return
        self.session.step = StepContext(self.procedure.name, order)
        names = names_read(step)
        await self._gather_parameters(names, order)
        inputs = input_sources(names, self.parameters, self.results, self.dynamic_variables)
        absent = [
            value.name
            for value in inputs
            if value.source == "missing" and self._is_required_parameter(value.name)
        ]
        if absent:
            why = f"required parameter(s) {absent} were not found in the conversation"
            record = StepExecution(
                order=order,
                kind=_kind(step),
                ran=False,
                status="not_runnable",
                not_run_reason=why,
                inputs=inputs,
                tool=_tool(step),
            )
            self._stop_or_go(step, order, record, why)
            return
        if isinstance(step, InstructionStep):
            optional = " (optional: skip it when it does not apply)" if step.optional else ""
            await self._turn(f"Step {order}{optional}: {self._filled(step.instruction)}")
            self.steps.append(
                StepExecution(order=order, kind="instruction", ran=True, inputs=inputs)
            )
        elif isinstance(step, ToolStep):
            await self._tool_step(step, order, inputs)
        else:
            await self._condition(step, order, inputs)

    async def _gather_parameters(self, names: list[str], order: int) -> None:
        """Ask once, for every parameter still unknown, when a step first reads one."""
        declared = {p.name: p for p in self.procedure.parameters}
        if self.asked or not any(n in declared and n not in self.parameters for n in names):
            return
        self.asked = True
        unknown = [p for p in self.procedure.parameters if p.name not in self.parameters]
        listing = "\n".join(f"- {p.name} ({p.type}): {p.description}" for p in unknown)
        mark = len(self.session.trace)
        await self._turn(
            f"Before step {order}, call {PROVIDE_PARAMETERS} once with all of these values "
            f"from the conversation (null for one it does not contain):\n{listing}"
        )
        given: dict[str, Any] = {}
        for call in self._calls_since(mark, PROVIDE_PARAMETERS):
            values = call.input.get("values")
            if isinstance(values, dict):
                given.update({k: v for k, v in values.items() if k in declared})
        self.parameters = settle_parameters(self.procedure, self.parameters, given)

    async def _tool_step(self, step: ToolStep, order: int, inputs: list[SourcedValue]) -> None:
        try:
            arguments = fill(step.arguments, self._scope())
        except TemplateError as exc:
            why = f"its arguments could not be filled: {exc}"
            record = StepExecution(
                order=order,
                kind="tool",
                ran=False,
                status="not_runnable",
                tool=step.tool,
                result_name=step.result_name,
                not_run_reason=why,
                inputs=inputs,
            )
            self._stop_or_go(step, order, record, why)
            return
        outcome = await self.session.call_tool(step.tool, arguments, tool_use_id=None)
        failed = outcome.is_error
        error = _text(outcome.output) if failed else None
        self.results[step.result_name] = {
            "result": None if failed else outcome.output,
            "succeeded": not failed,
            "error": error,
        }
        record = StepExecution(
            order=order,
            kind="tool",
            ran=True,
            status="failed" if failed else "succeeded",
            tool=step.tool,
            result_name=step.result_name,
            arguments=arguments,
            result=None if failed else outcome.output,
            error=error,
            inputs=inputs,
        )
        if failed:
            self._stop_or_go(step, order, record, error or "")
            return
        self.steps.append(record)
        self._note(
            f"Step {order}: the runtime called {step.tool} with "
            f"{json.dumps(arguments, ensure_ascii=False)}; result: {_text(outcome.output)}"
        )

    async def _condition(self, step: IfStep, order: int, inputs: list[SourcedValue]) -> None:
        condition = step.condition
        if condition.expression is not None:
            try:
                holds = compile_expression(condition.expression).holds(self._scope())
            except ExpressionError as exc:
                self._trace_condition_error(condition.expression, str(exc))
                why = f"its condition could not be evaluated: {exc}"
                record = StepExecution(
                    order=order,
                    kind="if",
                    ran=False,
                    status="failed",
                    condition=condition.expression,
                    decided_by="expression",
                    error=str(exc),
                    inputs=inputs,
                )
                self._stop_or_go(step, order, record, why)
                return
            self._note(f"Step {order}: condition `{condition.expression}` is {holds}.")
            self._decided(order, condition.expression, holds, "expression", inputs, None)
            return
        asked = self._filled(condition.natural_language or "")
        mark = len(self.session.trace)
        await self._turn(
            f'Step {order}: decide whether this holds for the conversation: "{asked}". '
            f"Call {DECIDE_CONDITION}."
        )
        decision = self._decision_since(mark)
        if decision is None:
            await self._turn(f"You did not call {DECIDE_CONDITION}. Call it now.")
            decision = self._decision_since(mark)
        if decision is None:
            self._note(f"Step {order}: no decision was given; its steps are skipped.")
            error = "the model gave no decision after being asked twice; treated as not holding"
            self._decided(order, asked, False, "model", inputs, error)
            return
        self._decided(order, asked, decision, "model", inputs, None)

    def _decided(
        self,
        order: int,
        condition: str,
        holds: bool,
        by: str,
        inputs: list[SourcedValue],
        error: str | None,
    ) -> None:
        self.taken[order] = holds
        self.steps.append(
            StepExecution(
                order=order,
                kind="if",
                ran=True,
                condition=condition,
                error=error,
                branch="taken" if holds else "not_taken",
                decided_by="expression" if by == "expression" else "model",
                inputs=inputs,
            )
        )

    def _decision_since(self, mark: int) -> bool | None:
        decisions = [call.input.get("holds") for call in self._calls_since(mark, DECIDE_CONDITION)]
        last = decisions[-1] if decisions else None
        return last if isinstance(last, bool) else None

    def _calls_since(self, mark: int, tool_name: str) -> list[ToolCallRecord]:
        return [
            call
            for call in self.session.trace[mark:]
            if call.tool_name == tool_name
            and call.succeeded
            and call.procedure_name == self.procedure.name
        ]

    def _trace_condition_error(self, expression: str, error: str) -> None:
        step = self.session.step
        self.session.trace.append(
            ToolCallRecord(
                tool_name=EVALUATE_CONDITION,
                kind="procedure",
                input={"expression": expression},
                succeeded=False,
                error=error,
                started_at=self.session.options.now(),
                procedure_name=self.procedure.name,
                procedure_step_order=step.step_order if step else None,
            )
        )

    def _stop_or_go(self, step: AnyStep, order: int, record: StepExecution, why: str) -> None:
        self.steps.append(record)
        what = f"Step {order}" + (f" ({step.tool})" if isinstance(step, ToolStep) else "")
        optional = isinstance(step, (ToolStep, InstructionStep)) and step.optional
        if optional:
            self._note(f"{what} (optional) could not be done and was skipped: {why}")
            return
        self.stopped_at = order
        self._note(
            f"{what} failed: {why}. Procedure {self.procedure.name} stops here; take that into "
            "account in your outputs."
        )

    def _skip(self, numbered: NumberedStep, why: str) -> None:
        self.steps.append(
            StepExecution(
                order=numbered.order,
                kind=_kind(numbered.step),
                ran=False,
                status="skipped",
                not_run_reason=why,
                tool=_tool(numbered.step),
            )
        )

    def _is_required_parameter(self, name: str) -> bool:
        return any(p.name == name and p.required for p in self.procedure.parameters)

    def _filled(self, text: str) -> str:
        """`text` with its placeholders filled; a value not known stays as written."""
        try:
            return fill_text(text, self._scope())
        except TemplateError:
            return text

    def _scope(self) -> dict[str, Any]:
        # A missing optional parameter fills as null; a missing required one never gets here.
        known = {name: value.value for name, value in self.parameters.items()}
        return {**conversation_variables(self.session.conversation), **known, **self.results}

    def _note(self, text: str) -> None:
        self.pending.append({"type": "text", "text": text})

    async def _turn(self, text: str) -> None:
        self._note(text)
        content, self.pending = self.pending, []
        await self.session.converse(content)


def _kind(step: AnyStep) -> Any:
    if isinstance(step, InstructionStep):
        return "instruction"
    return "tool" if isinstance(step, ToolStep) else "if"


def _tool(step: AnyStep) -> str | None:
    return step.tool if isinstance(step, ToolStep) else None


def _text(output: Any) -> str:
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
