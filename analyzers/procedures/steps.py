"""Pure step logic of structured procedures: numbering, what each step reads, and where the
values it reads come from. The runner (`analyzers.runtime.procedure_runner`) does the I/O."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from analyzers.definitions.expressions import ExpressionError, compile_expression
from analyzers.procedures.tools import has_type
from schemas.procedure import IfStep, InstructionStep, Procedure, ToolStep
from schemas.procedure_execution import SourcedValue, ValueSource
from schemas.templates import SYSTEM_VARIABLE_PREFIX, placeholders, root_name

AnyStep = InstructionStep | ToolStep | IfStep


@dataclass(frozen=True)
class NumberedStep:
    """A step with its number in the outline and, for a nested step, its `if`'s number."""

    order: int
    step: AnyStep
    parent: int | None


def numbered_steps(procedure: Procedure) -> list[NumberedStep]:
    """Every step in running order, numbered from 1 as the outline numbers them."""
    numbered: list[NumberedStep] = []
    parents: dict[tuple[object, ...], int] = {}
    for order, (loc, step) in enumerate(procedure.walk_steps(), start=1):
        parents[loc] = order
        parent = parents.get(loc[:2]) if len(loc) > 2 else None
        numbered.append(NumberedStep(order, step, parent))
    return numbered


def names_read(step: AnyStep) -> list[str]:
    """The root names a step's templates and condition read, in order, each once."""
    texts: list[Any] = []
    if isinstance(step, ToolStep):
        texts += [step.arguments, step.instruction or ""]
    elif isinstance(step, InstructionStep):
        texts.append(step.instruction)
    elif step.condition.natural_language is not None:
        texts.append(step.condition.natural_language)
    names = [root_name(path) for path in placeholders(texts)]
    if isinstance(step, IfStep) and step.condition.expression is not None:
        # An expression that does not compile is reported when the runner evaluates it.
        with suppress(ExpressionError):
            names += sorted(compile_expression(step.condition.expression).variables)
    return list(dict.fromkeys(names))


def initial_parameters(
    procedure: Procedure, dynamic_variables: Mapping[str, Any]
) -> dict[str, SourcedValue]:
    """Parameters a conversation dynamic variable of the same name (and type) supplies."""
    return {
        p.name: SourcedValue(
            name=p.name, value=dynamic_variables[p.name], source="conversation_variable"
        )
        for p in procedure.parameters
        if dynamic_variables.get(p.name) is not None and has_type(dynamic_variables[p.name], p)
    }


def settle_parameters(
    procedure: Procedure, known: Mapping[str, SourcedValue], given: Mapping[str, Any]
) -> dict[str, SourcedValue]:
    """After the model was asked: its values, then defaults, then `missing` for the rest."""
    settled = dict(known)
    for parameter in procedure.parameters:
        if parameter.name in settled:
            continue
        if given.get(parameter.name) is not None:
            value, source = given[parameter.name], "model"
        elif parameter.default is not None:
            value, source = parameter.default, "default"
        else:
            value, source = None, "missing"
        settled[parameter.name] = SourcedValue(name=parameter.name, value=value, source=source)
    return settled


def input_sources(
    names: list[str],
    parameters: Mapping[str, SourcedValue],
    results: Mapping[str, Any],
    dynamic_variables: Mapping[str, Any],
) -> list[SourcedValue]:
    """Each name a step reads, with its value and where it came from."""
    sourced = []
    for name in names:
        source: ValueSource
        if name in results:
            value, source = results[name], "step_result"
        elif name in parameters:
            sourced.append(parameters[name])
            continue
        elif name.startswith(SYSTEM_VARIABLE_PREFIX):
            value, source = dynamic_variables.get(name), "system_variable"
        elif name in dynamic_variables:
            value, source = dynamic_variables[name], "conversation_variable"
        else:
            value, source = None, "missing"
        sourced.append(SourcedValue(name=name, value=value, source=source))
    return sourced
