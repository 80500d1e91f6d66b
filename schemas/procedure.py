"""Procedures: what a procedural agent should do in a given situation.

A procedure has a trigger (when it applies) and content. Free-form content is markdown guidance
that goes into the prompt. Structured content is an ordered list of typed steps that the runtime
runs as a state machine:

- `instruction`: a model turn doing what the text says;
- `tool`: a tool call whose arguments are a template with `{{parameter}}` placeholders;
- `if`: a condition (a CEL `expression`, or a `natural_language` case the model decides) and the
  nested steps to run when it holds. An `if` never comes first, never nests, and never directly
  follows another `if` (the structural rules of structured procedures).

Procedures carry their provenance and scope: version, tenant, owner agent, whether they are
shared with every agent of the tenant, whether they are approved, and whether an admin wrote them
or they were learned from a successful conversation (learned ones start unapproved).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    Discriminator,
    Field,
    PositiveInt,
    StringConstraints,
    Tag,
    model_validator,
)

from schemas._base import Contract
from schemas.rules import Loc, RuleViolation, raise_if_any
from schemas.templates import NAME, SYSTEM_VARIABLE_PREFIX, placeholders, root_name, strip_braces

Name = Annotated[str, StringConstraints(pattern=NAME, max_length=64)]
NonEmptyText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Parameter(Contract):
    """A value the procedure needs from the conversation, such as `vendor_name`.

    A conversation dynamic variable of the same name supplies it; otherwise the model extracts
    all such parameters from the transcript in one turn, before the first step that uses one;
    otherwise `default` does. A `required` parameter still missing then makes the steps that
    need it not runnable.
    """

    name: Name
    description: str = ""
    type: Literal["string", "integer", "number", "boolean", "object", "array"] = "string"
    required: bool = True
    default: Any = Field(
        default=None,
        description="Used when neither the conversation's variables nor the model supply one.",
    )


class ProcedureTrigger(Contract):
    """When a procedure applies.

    `description` is for the model (`When the customer asks to onboard a new vendor`).
    `patterns` match the customer's words: `*` is any run of words and `|` separates
    alternatives (`onboard * vendor|add new vendor`). `conditions` are CEL expressions over the
    conversation that must all hold.
    """

    description: NonEmptyText
    patterns: list[NonEmptyText] = Field(default_factory=list)
    conditions: list[NonEmptyText] = Field(default_factory=list)


class Condition(Contract):
    """The condition of an `if` step: exactly one of `expression` or `natural_language`."""

    expression: NonEmptyText | None = None
    natural_language: NonEmptyText | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        if (self.expression is None) == (self.natural_language is None):
            raise ValueError("give exactly one of 'expression' or 'natural_language'")
        return self

    @property
    def cel(self) -> str | None:
        """The expression in plain CEL (`{{name}}` spelled as `name`), if this is one."""
        return None if self.expression is None else strip_braces(self.expression)


class InstructionStep(Contract):
    """A model turn: do what `instruction` says."""

    instruction: NonEmptyText
    optional: bool = False


class ToolStep(Contract):
    """A tool call the runtime makes with `arguments` filled from the run.

    `id` names the step's result for later placeholders and conditions
    (`{{lookup.result.vendorId}}`, `lookup.result == null`); it defaults to the tool's name.
    A failing step stops the procedure unless it is `optional`.
    """

    tool: Name
    id: Name | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    instruction: str | None = None
    optional: bool = False

    @property
    def result_name(self) -> str:
        """The name later steps use to refer to this step's result."""
        return self.id or self.tool


class IfStep(Contract):
    """Run `steps` only when `if` holds; then continue with the step after this one."""

    condition: Condition = Field(alias="if")
    steps: list[Step] = Field(min_length=1)


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for kind in ("if", "tool", "instruction"):
            if kind in value:
                return kind
        return None
    if isinstance(value, IfStep):
        return "if"
    if isinstance(value, ToolStep):
        return "tool"
    if isinstance(value, InstructionStep):
        return "instruction"
    return None


Step = Annotated[
    Annotated[InstructionStep, Tag("instruction")]
    | Annotated[ToolStep, Tag("tool")]
    | Annotated[IfStep, Tag("if")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step needs one of the keys 'instruction', 'tool' or 'if'",
    ),
]

IfStep.model_rebuild()


class Procedure(Contract):
    """A named, versioned procedure: free-form (`content`) or structured (`steps`)."""

    kind: Literal["procedure"] = "procedure"
    name: Name
    version: PositiveInt = 1
    description: str = ""
    trigger: ProcedureTrigger
    parameters: list[Parameter] = Field(default_factory=list)
    dynamic_variables: list[Name] = Field(
        default_factory=list,
        description="Conversation dynamic variables the steps use (system__* ones are implicit).",
    )
    content: NonEmptyText | None = None
    steps: list[Step] | None = None
    tenant_id: str | None = Field(default=None, description="None: available to every tenant.")
    agent_id: str | None = Field(default=None, description="Owner agent; None: tenant-wide.")
    shared: bool = False
    approved: bool = Field(
        default=True,
        description="Only approved procedures are used. Defaults to false for learned ones.",
    )
    created_by: Literal["admin", "learned"] = "admin"
    created_at: AwareDatetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _learned_start_unapproved(cls, data: Any) -> Any:
        # A procedure learned from a conversation needs a human's review before it is used.
        if (
            isinstance(data, dict)
            and "approved" not in data
            and data.get("created_by") == "learned"
        ):
            return {**data, "approved": False}
        return data

    @model_validator(mode="after")
    def _check_rules(self) -> Procedure:
        raise_if_any(procedure_violations(self))
        return self

    @property
    def form(self) -> Literal["free_form", "structured"]:
        """Which kind of content this procedure has."""
        return "structured" if self.steps is not None else "free_form"

    def walk_steps(self) -> Iterator[tuple[Loc, InstructionStep | ToolStep | IfStep]]:
        """Every step in running order with its location, nested steps after their `if`."""
        for index, step in enumerate(self.steps or []):
            yield ("steps", index), step
            if isinstance(step, IfStep):
                for inner, nested in enumerate(step.steps):
                    yield ("steps", index, "steps", inner), nested

    def names_in_scope(self, before: Loc) -> set[str]:
        """Names a template or condition at step `before` may use: parameters, dynamic
        variables and the results of the tool steps that run before it.
        """
        names = {parameter.name for parameter in self.parameters} | set(self.dynamic_variables)
        for loc, step in self.walk_steps():
            if loc == before:
                break
            if isinstance(step, ToolStep):
                names.add(step.result_name)
        return names


def is_in_scope(name: str, scope: set[str]) -> bool:
    """System dynamic variables are always available; everything else must be declared."""
    return name in scope or name.startswith(SYSTEM_VARIABLE_PREFIX)


def procedure_violations(procedure: Procedure) -> list[RuleViolation]:
    """Every structural rule `procedure` breaks (an empty list when it is sound)."""
    violations: list[RuleViolation] = []
    if (procedure.content is None) == (procedure.steps is None):
        violations.append(
            RuleViolation(
                (),
                "procedure-form",
                "a procedure has either 'content' (free-form) or 'steps' (structured), "
                "not both and not neither",
            )
        )
    if procedure.steps is not None and not procedure.steps:
        violations.append(
            RuleViolation(("steps",), "steps-not-empty", "a structured procedure needs a step")
        )
    violations += _if_placement_violations(procedure.steps or [])
    violations += _name_violations(procedure)
    return violations


def _if_placement_violations(steps: list[Any]) -> list[RuleViolation]:
    violations: list[RuleViolation] = []
    previous_was_if = False
    for index, step in enumerate(steps):
        is_if = isinstance(step, IfStep)
        if is_if and index == 0:
            violations.append(
                RuleViolation(
                    ("steps", 0),
                    "if-not-first",
                    "an 'if' step cannot come first: it needs an earlier step to branch from",
                )
            )
        if is_if and previous_was_if:
            violations.append(
                RuleViolation(
                    ("steps", index),
                    "if-not-consecutive",
                    f"an 'if' step cannot directly follow another 'if' (steps {index - 1} and "
                    f"{index}); put a step between them",
                )
            )
        if isinstance(step, IfStep):
            for inner, nested in enumerate(step.steps):
                if isinstance(nested, IfStep):
                    violations.append(
                        RuleViolation(
                            ("steps", index, "steps", inner),
                            "if-not-nested",
                            "an 'if' step cannot be nested inside another 'if'",
                        )
                    )
        previous_was_if = is_if
    return violations


def _name_violations(procedure: Procedure) -> list[RuleViolation]:
    violations: list[RuleViolation] = []
    declared = [parameter.name for parameter in procedure.parameters]
    for name in sorted({name for name in declared if declared.count(name) > 1}):
        violations.append(
            RuleViolation(("parameters",), "name-unique", f"parameter {name!r} is declared twice")
        )
    variables = procedure.dynamic_variables
    for name in sorted({name for name in variables if variables.count(name) > 1}):
        violations.append(
            RuleViolation(
                ("dynamic_variables",), "name-unique", f"dynamic variable {name!r} is listed twice"
            )
        )
    for name in sorted(set(declared) & set(variables)):
        violations.append(
            RuleViolation(
                ("dynamic_variables",),
                "name-unique",
                f"{name!r} is both a parameter and a dynamic variable, so {{{{{name}}}}} would be "
                "ambiguous",
            )
        )
    seen_results: dict[str, Loc] = {}
    for loc, step in procedure.walk_steps():
        violations += _text_placeholder_violations(procedure, loc, step)
        if not isinstance(step, ToolStep):
            continue
        if step.result_name in seen_results:
            violations.append(
                RuleViolation(
                    loc,
                    "step-id-unique",
                    f"two tool steps are both named {step.result_name!r}; give one an 'id'",
                )
            )
        seen_results[step.result_name] = loc
        scope = procedure.names_in_scope(loc)
        for path in placeholders(step.arguments):
            if not is_in_scope(root_name(path), scope):
                violations.append(
                    RuleViolation(
                        (*loc, "arguments"),
                        "template-undeclared",
                        f"placeholder {{{{{path}}}}} is not a declared parameter, a dynamic "
                        f"variable or an earlier step's result (known: {sorted(scope)})",
                    )
                )
    return violations


def _text_placeholder_violations(
    procedure: Procedure, loc: Loc, step: InstructionStep | ToolStep | IfStep
) -> list[RuleViolation]:
    """Placeholders in instructions and natural-language conditions must be in scope too: the
    runtime fills them before the model reads the step."""
    texts: list[tuple[Loc, str | None]] = []
    if isinstance(step, (InstructionStep, ToolStep)):
        texts.append(((*loc, "instruction"), step.instruction))
    else:
        texts.append(((*loc, "if", "natural_language"), step.condition.natural_language))
    scope = procedure.names_in_scope(loc)
    return [
        RuleViolation(
            where,
            "template-undeclared",
            f"placeholder {{{{{path}}}}} is not a declared parameter, a dynamic variable or an "
            f"earlier step's result (known: {sorted(scope)})",
        )
        for where, text in texts
        if text
        for path in placeholders(text)
        if not is_in_scope(root_name(path), scope)
    ]
