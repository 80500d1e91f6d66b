"""Structured procedures run as a deterministic state machine.

The runtime, not the model, walks the steps in order:
- a tool step is executed by the runtime with its argument template filled from the procedure's
  parameters, the conversation's dynamic variables and earlier steps' results; when a parameter
  is still unknown, the model is asked for it first (`provide_parameters`);
- an expression condition is evaluated by the runtime (CEL);
- a natural-language condition is a model turn that must answer through `decide_condition`;
- an instruction step is a model turn.
A failing tool step stops the procedure unless the step is optional. What the runtime did is
told to the model in the next message, so its analysis rests on the real results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from analyzers.definitions.expressions import (
    ExpressionError,
    compile_expression,
    conversation_variables,
)
from analyzers.runtime.session import Session, StepContext
from analyzers.tools.base import JSON, ToolContext, ToolKind, ToolOutcome
from analyzers.tools.template_fill import TemplateError, fill, fill_text
from schemas.procedure import IfStep, InstructionStep, Parameter, Procedure, ToolStep
from schemas.templates import placeholders, root_name

PROVIDE_PARAMETERS = "provide_parameters"
DECIDE_CONDITION = "decide_condition"
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
}


@dataclass
class ProcedureState:
    """What the current procedure has learned: parameters given and the last decision."""

    procedure: Procedure | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    decision: tuple[bool, str] | None = None


@dataclass(frozen=True)
class ProvideParametersTool:
    """Lets the model hand the runtime the values a procedure's steps need."""

    state: ProcedureState

    @property
    def name(self) -> str:
        """The tool's name."""
        return PROVIDE_PARAMETERS

    @property
    def kind(self) -> ToolKind:
        """Traced as a procedure tool."""
        return "procedure"

    def definition(self) -> JSON:
        """A generic schema, the same for every procedure, so the tool list stays cacheable."""
        return {
            "name": PROVIDE_PARAMETERS,
            "description": "Give the running procedure the parameter values it asked for, "
            "taken from the conversation. Use null for a value the conversation does not "
            "contain.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "values": {
                        "type": "object",
                        "description": "Parameter values by parameter name.",
                    }
                },
                "required": ["values"],
            },
        }

    async def call(self, arguments: JSON, context: ToolContext) -> ToolOutcome:
        """Check each value against the procedure's parameter declarations and keep it."""
        procedure = self.state.procedure
        if procedure is None:
            return ToolOutcome("No structured procedure is running.", is_error=True)
        values = arguments.get("values")
        if not isinstance(values, dict):
            return ToolOutcome("values must be an object of parameter values.", is_error=True)
        declared = {parameter.name: parameter for parameter in procedure.parameters}
        problems = [
            f"{name!r} is not a parameter of {procedure.name} (its parameters: {sorted(declared)})"
            for name in values
            if name not in declared
        ]
        problems += [
            f"{name!r} should be a {declared[name].type}, got {value!r}"
            for name, value in values.items()
            if name in declared and value is not None and not _has_type(value, declared[name])
        ]
        if problems:
            return ToolOutcome("Not accepted:\n- " + "\n- ".join(problems), is_error=True)
        self.state.parameters.update(values)
        return ToolOutcome(f"Parameters accepted: {sorted(values)}.")


@dataclass(frozen=True)
class DecideConditionTool:
    """Lets the model answer a natural-language condition of an `if` step."""

    state: ProcedureState

    @property
    def name(self) -> str:
        """The tool's name."""
        return DECIDE_CONDITION

    @property
    def kind(self) -> ToolKind:
        """Traced as a procedure tool."""
        return "procedure"

    def definition(self) -> JSON:
        """Whether the condition holds, with a reason citing the conversation."""
        return {
            "name": DECIDE_CONDITION,
            "description": "Answer the condition the running procedure asked about: whether "
            "it holds for this conversation, and why.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "holds": {"type": "boolean"},
                    "reason": {"type": "string", "description": "Cite turn numbers."},
                },
                "required": ["holds", "reason"],
                "additionalProperties": False,
            },
        }

    async def call(self, arguments: JSON, context: ToolContext) -> ToolOutcome:
        """Keep the decision for the runtime to act on."""
        holds = arguments.get("holds")
        if not isinstance(holds, bool):
            return ToolOutcome("holds must be true or false.", is_error=True)
        self.state.decision = (holds, str(arguments.get("reason", "")))
        return ToolOutcome("Decision noted.")


def _has_type(value: Any, parameter: Parameter) -> bool:
    expected = _JSON_TYPES[parameter.type]
    if isinstance(value, bool) and parameter.type in ("integer", "number"):
        return False
    return isinstance(value, expected)


class ProcedureRunner:
    """Walks one structured procedure's steps inside a `Session`."""

    def __init__(self, session: Session, procedure: Procedure, state: ProcedureState) -> None:
        self.session = session
        self.procedure = procedure
        self.state = state
        self.results: dict[str, dict[str, Any]] = {}
        self.pending: list[JSON] = []
        self.order = 0

    async def run(self, opening: list[JSON]) -> list[JSON]:
        """Run every step; return what is still to be told to the model afterwards."""
        self.state.procedure = self.procedure
        self.state.parameters = {}
        self.pending = list(opening)
        self._note(f"Procedure {self.procedure.name} starts now.")
        try:
            for step in self.procedure.steps or []:
                self.order += 1
                if not await self._run_step(step):
                    break
            else:
                self._note(f"Procedure {self.procedure.name} is complete.")
        finally:
            self.session.step = None
            self.state.procedure = None
        return self.pending

    async def _run_step(self, step: InstructionStep | ToolStep | IfStep) -> bool:
        """Run a step; False when the procedure must stop here."""
        self.session.step = StepContext(self.procedure.name, self.order)
        if isinstance(step, InstructionStep):
            optional = " (optional: skip it when it does not apply)" if step.optional else ""
            await self._turn(f"Step {self.order}{optional}: {self._filled(step.instruction)}")
            return True
        if isinstance(step, ToolStep):
            return await self._tool_step(step)
        holds = await self._condition(step)
        if not holds:
            self.order += len(step.steps)
            return True
        for nested in step.steps:
            self.order += 1
            if not await self._run_step(nested):
                return False
        return True

    async def _tool_step(self, step: ToolStep) -> bool:
        needed = [
            root_name(path)
            for path in placeholders(step.arguments)
            if root_name(path) in {p.name for p in self.procedure.parameters}
        ]
        missing = [name for name in dict.fromkeys(needed) if name not in self.state.parameters]
        if missing:
            await self._ask_parameters(missing, step)
        try:
            arguments = fill(step.arguments, self._scope())
        except TemplateError as exc:
            return self._step_failed(step, f"its arguments could not be filled: {exc}")
        session = self.session
        outcome = await session.call_tool(step.tool, arguments, tool_use_id=None)
        self.results[step.result_name] = {
            "result": None if outcome.is_error else outcome.output,
            "succeeded": not outcome.is_error,
            "error": _text(outcome.output) if outcome.is_error else None,
        }
        if outcome.is_error:
            return self._step_failed(step, _text(outcome.output))
        self._note(
            f"Step {self.order}: the runtime called {step.tool} with "
            f"{json.dumps(arguments, ensure_ascii=False)}; result: {_text(outcome.output)}"
        )
        return True

    def _step_failed(self, step: ToolStep, why: str) -> bool:
        if step.optional:
            self._note(f"Step {self.order} ({step.tool}, optional) failed and was skipped: {why}")
            return True
        self._note(
            f"Step {self.order} ({step.tool}) failed: {why}. Procedure {self.procedure.name} "
            "stops here; take that into account in your outputs."
        )
        return False

    async def _ask_parameters(self, missing: list[str], step: ToolStep) -> None:
        declared = {p.name: p for p in self.procedure.parameters}
        listing = "\n".join(
            f"- {name} ({declared[name].type}): {declared[name].description}" for name in missing
        )
        await self._turn(
            f"Before step {self.order} ({step.tool}), call {PROVIDE_PARAMETERS} with these "
            f"values from the conversation:\n{listing}"
        )

    async def _condition(self, step: IfStep) -> bool:
        condition = step.condition
        if condition.expression is not None:
            try:
                holds = compile_expression(condition.expression).holds(self._scope())
            except ExpressionError as exc:
                self._note(
                    f"Step {self.order}: condition could not be evaluated ({exc}); "
                    "treated as false."
                )
                return False
            self._note(f"Step {self.order}: condition `{condition.expression}` is {holds}.")
            return holds
        self.state.decision = None
        await self._turn(
            f"Step {self.order}: decide whether this holds for the conversation: "
            f'"{self._filled(condition.natural_language or "")}". Call {DECIDE_CONDITION}.'
        )
        if self.state.decision is None:
            await self._turn(f"You did not call {DECIDE_CONDITION}. Call it now.")
        if self.state.decision is None:
            self._note(f"Step {self.order}: no decision was given; treated as false.")
            return False
        return self.state.decision[0]

    def _filled(self, text: str) -> str:
        """`text` with its placeholders filled; a value not known yet stays as written."""
        try:
            return fill_text(text, self._scope())
        except TemplateError:
            return text

    def _scope(self) -> dict[str, Any]:
        conversation = self.session.conversation
        return {
            **conversation_variables(conversation),
            **self.state.parameters,
            **self.results,
        }

    def _note(self, text: str) -> None:
        self.pending.append({"type": "text", "text": text})

    async def _turn(self, text: str) -> None:
        self._note(text)
        content, self.pending = self.pending, []
        await self.session.converse(content)


def _text(output: Any) -> str:
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
