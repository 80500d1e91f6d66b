"""The two tools through which the model answers a running structured procedure.

Both are immutable and keep nothing: a call is checked and answered, and the runner reads what
was given from the run's trace (the call's input, when it succeeded). So the runner owns its
state and no tool shares any with it. Their definitions are the same for every procedure, so the
tool list (the start of the cached prompt prefix) does not change with the procedures that apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from analyzers.tools.base import JSON, ToolContext, ToolKind, ToolOutcome
from schemas.procedure import Parameter, Procedure

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


@dataclass(frozen=True)
class ProvideParametersTool:
    """Lets the model hand the runtime the parameter values of the procedure that asked."""

    procedures: Mapping[str, Procedure] = field(default_factory=dict)
    name: str = PROVIDE_PARAMETERS
    kind: ToolKind = "procedure"

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
                    "procedure": {
                        "type": "string",
                        "description": "The procedure that asked (may be left out when only "
                        "one procedure runs).",
                    },
                    "values": {
                        "type": "object",
                        "description": "Parameter values by parameter name.",
                    },
                },
                "required": ["values"],
            },
        }

    async def call(self, arguments: JSON, context: ToolContext) -> ToolOutcome:
        """Check each value against the procedure's parameter declarations."""
        values = arguments.get("values")
        if not isinstance(values, dict):
            return ToolOutcome("values must be an object of parameter values.", is_error=True)
        declared = self._declared(arguments.get("procedure"))
        if isinstance(declared, str):
            return ToolOutcome(declared, is_error=True)
        problems = parameter_problems(declared, values)
        if problems:
            return ToolOutcome("Not accepted:\n- " + "\n- ".join(problems), is_error=True)
        return ToolOutcome(f"Parameters accepted: {sorted(values)}.")

    def _declared(self, procedure: Any) -> dict[str, Parameter] | str:
        if procedure is not None:
            chosen = self.procedures.get(str(procedure))
            if chosen is None:
                return (
                    f"{procedure!r} is not a running procedure (running: {sorted(self.procedures)})"
                )
            return {p.name: p for p in chosen.parameters}
        if not self.procedures:
            return "No structured procedure is running."
        # Without a name, any running procedure's parameter is accepted (the first declaration
        # of a name gives its type); the runner takes only the calls made during its own turn.
        declared: dict[str, Parameter] = {}
        for running in self.procedures.values():
            for parameter in running.parameters:
                declared.setdefault(parameter.name, parameter)
        return declared


def parameter_problems(declared: Mapping[str, Parameter], values: Mapping[str, Any]) -> list[str]:
    """Every value that is not a declared parameter or has the wrong JSON type."""
    problems = [
        f"{name!r} is not a parameter of this procedure (its parameters: {sorted(declared)})"
        for name in values
        if name not in declared
    ]
    problems += [
        f"{name!r} should be a {declared[name].type}, got {type(value).__name__}"
        for name, value in values.items()
        if name in declared and value is not None and not has_type(value, declared[name])
    ]
    return problems


def has_type(value: Any, parameter: Parameter) -> bool:
    """Whether `value` is of the parameter's JSON type (a bool is not a number)."""
    expected = _JSON_TYPES[parameter.type]
    if isinstance(value, bool) and parameter.type in ("integer", "number"):
        return False
    return isinstance(value, expected)


@dataclass(frozen=True)
class DecideConditionTool:
    """Lets the model answer a natural-language condition of an `if` step."""

    name: str = DECIDE_CONDITION
    kind: ToolKind = "procedure"

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
        """Check the answer's shape; the runner reads it from the trace."""
        if not isinstance(arguments.get("holds"), bool):
            return ToolOutcome("holds must be true or false.", is_error=True)
        return ToolOutcome("Decision noted.")
