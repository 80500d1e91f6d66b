"""CEL expressions for triggers, `if` conditions and sink routing. Never `eval`.

posthoc uses the Common Expression Language (https://cel.dev): a small, side-effect free,
non-Turing-complete language with a formal spec, used by Kubernetes and Google Cloud for exactly
this kind of user-written rule. The engine is `common-expression-language` (Rust `cel`
bindings). Expressions may spell variables as `{{name}}` like the procedure seeds do.

The engine has no cost limit of its own and holds the GIL while it runs, so cost is bounded
here: at compile time comprehension macros may nest at most `max_expression_nesting` deep, and
before each evaluation the steps are estimated from the nesting and the largest collection in
the variables (macros x largest ** nesting); over `expression_budget` the evaluation fails with
a reason instead of running. Errors name the expression, never the data it read.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cel

from analyzers.definitions.limits import DEFAULT_LIMITS, InputLimits, active_limits
from schemas.conversation import Conversation
from schemas.templates import strip_braces

# Variables bound by CEL's comprehension macros (`turns.exists(t, t.role == "user")` binds `t`
# inside the macro's parentheses); the engine reports them as variables, but they need no
# binding from us as long as they are only used inside their macro.
_MACRO = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_STRING_LITERAL = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_FUNCTION_FAILED = re.compile(r"^Function '(\w+)' error")
MAX_EXPRESSION_CHARS = 10_000

STANDARD_FUNCTIONS = frozenset(
    {
        "size",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "timestamp",
        "duration",
        "type",
        "dyn",
        "has",
        "getFullYear",
        "getMonth",
        "getDate",
        "getDayOfMonth",
        "getDayOfWeek",
        "getDayOfYear",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
    }
)
"""The functions of CEL's standard definitions that the engine provides. Operators (`_==_`)
and macro internals (`@not_strictly_false`) are allowed too."""

CONVERSATION_VARIABLES = frozenset(
    {
        "conversation_id",
        "tenant_id",
        "agent_id",
        "agent_version",
        "channel",
        "started_at",
        "ended_at",
        "duration_seconds",
        "outcome",
        "termination_reason",
        "turns",
        "turn_count",
        "events",
        "dynamic_variables",
        "metadata",
    }
)
"""What a trigger expression can read about a conversation."""


class ExpressionError(ValueError):
    """An expression does not compile, names an unknown variable, or failed to evaluate."""


@dataclass(frozen=True)
class Expression:
    """A compiled CEL expression and the free variables it reads."""

    source: str
    variables: frozenset[str]
    _program: Any
    nesting: int = 0
    macros: int = 0
    budget: int = DEFAULT_LIMITS.expression_budget

    def estimated_steps(self, variables: Mapping[str, Any]) -> int:
        """An upper estimate of the engine's steps over `variables` (1 without macros)."""
        if not self.macros:
            return 1
        if isinstance(variables, SharedVariables):
            found = variables.largest_collection(self.variables, cap=self.budget)
        else:
            found = largest_collection(variables, cap=self.budget)
        return int(self.macros * max(1, found) ** self.nesting)

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """Evaluate against `variables`; any failure, or an estimate over the budget, becomes
        an `ExpressionError` that names the expression but never quotes the data."""
        # Only the variables the expression reads go to the engine: it converts every value it
        # is given, and a trigger such as `turn_count >= 2` need not pay for the turns.
        bound: Mapping[str, Any] | cel.Context
        if isinstance(variables, SharedVariables):
            steps = self.estimated_steps(variables)
            bound = variables.context(self.variables) if steps <= self.budget else {}
        else:
            bound = {name: variables[name] for name in self.variables if name in variables}
            steps = self.estimated_steps(bound)
        if steps > self.budget:
            raise ExpressionError(
                f"expression {self.source!r} would take about {steps:,} steps on this input, "
                f"over the evaluation budget of {self.budget:,}; nest fewer macros"
            )
        try:
            return self._program.execute(bound)
        except (RuntimeError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise ExpressionError(
                f"expression {self.source!r} failed: {_failure_kind(exc)}"
            ) from None

    def holds(self, variables: Mapping[str, Any]) -> bool:
        """Evaluate a condition; a non-boolean result is an error, not a truthy guess."""
        value = self.evaluate(variables)
        if not isinstance(value, bool):
            raise ExpressionError(
                f"expression {self.source!r} gave a {type(value).__name__}, not true or false"
            )
        return value


def _failure_kind(exc: Exception) -> str:
    # The engine's messages quote values (a missing map key, a bad regex taken from a turn):
    # keep only what comes from the expression itself.
    function = _FUNCTION_FAILED.match(str(exc))
    if function:
        return f"function {function.group(1)}() could not handle its argument"
    if isinstance(exc, TypeError):
        return "operands of different types (CEL does not convert; use int(), string(), ...)"
    if isinstance(exc, LookupError):
        return "a key or index that is not there (guard it with has() or size())"
    if isinstance(exc, ArithmeticError):
        return "an arithmetic error (division by zero or overflow)"
    return f"an evaluation error ({type(exc).__name__})"


class SharedVariables(Mapping[str, Any]):
    """Variables that many expressions are evaluated against, such as a conversation's for the
    trigger of every analyzer: each value is converted to CEL once, when the first expression
    that reads it runs, and the step estimate of each set of variables is made once.

    The engine converts every value it is given on every evaluation; for a conversation's
    tool-call events with their results that cost ~0.5 ms, and the size estimate as much again,
    against microseconds for the expression itself. Evaluating through `SharedVariables` gives
    the same results and errors as through a plain mapping of the same values.
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)
        self._context = cel.Context()
        self._in_context: set[str] = set()
        self._largest: dict[tuple[frozenset[str], int], int] = {}

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def context(self, names: frozenset[str]) -> cel.Context:
        """The engine's context, holding (at least) those of `names` that are bound here."""
        for name in names - self._in_context:
            if name in self._values:
                self._context.add_variable(name, self._values[name])
            self._in_context.add(name)
        return self._context

    def largest_collection(self, names: frozenset[str], *, cap: int) -> int:
        """`largest_collection` of the variables among `names`, as a mapping of them."""
        key = (names, cap)
        if key not in self._largest:
            used = {name: self._values[name] for name in names if name in self._values}
            self._largest[key] = largest_collection(used, cap=cap)
        return self._largest[key]


def largest_collection(value: Any, *, cap: int) -> int:
    """The size of the largest list, map or string-free collection inside `value` (iterative;
    stops looking once one reaches `cap`)."""
    largest = 0
    stack: list[Any] = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            children = list(item.values())
        elif isinstance(item, list | tuple):
            children = list(item)
        else:
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        largest = max(largest, len(children))
        if largest >= cap:
            return largest
        stack.extend(child for child in children if isinstance(child, Mapping | list | tuple))
    return largest


def compile_expression(
    source: str,
    *,
    known: frozenset[str] | set[str] | None = None,
    limits: InputLimits | None = None,
) -> Expression:
    """Compile `source`; with `known`, also reject variables outside that set.

    Names beginning with `system__` (platform dynamic variables) are always accepted. Macros
    nested deeper than `limits.max_expression_nesting` are refused.
    """
    return _compile(source, None if known is None else frozenset(known), active_limits(limits))


@functools.lru_cache(maxsize=1024)
def _compile(source: str, known: frozenset[str] | None, limits: InputLimits) -> Expression:
    # Triggers are compiled for every conversation planned: a handful of distinct expressions
    # per process, each checked once (an Expression is immutable, so sharing it is safe).
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(
            f"an expression of {len(source)} characters; at most {MAX_EXPRESSION_CHARS}"
        )
    text = strip_braces(source)
    nesting, macros = macro_nesting(text)
    if nesting > limits.max_expression_nesting:
        raise ExpressionError(
            f"{source!r} nests {nesting} comprehension macros (all, exists, map, ...) inside "
            f"each other; at most {limits.max_expression_nesting} are allowed, because the "
            "work grows as the number of turns to that power"
        )
    try:
        program = _compiled(text)
    except ValueError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise ExpressionError(f"{source!r} is not valid CEL: {first_line}") from exc
    free = frozenset(program.variables()) - _bound_only_inside_macros(text)
    unknown_functions = sorted(
        name
        for name in program.functions()
        if name not in STANDARD_FUNCTIONS and name[:1].isalpha()
    )
    if unknown_functions:
        raise ExpressionError(
            f"{source!r} calls {unknown_functions}, which CEL here does not provide; "
            f"available: {sorted(STANDARD_FUNCTIONS)} and the macros all, exists, exists_one, "
            "map, filter"
        )
    if known is not None:
        unknown = sorted(
            name for name in free if name not in known and not name.startswith("system__")
        )
        if unknown:
            raise ExpressionError(
                f"{source!r} uses unknown variable(s) {unknown}; available: {sorted(known)}"
            )
    return Expression(
        source=source,
        variables=free,
        _program=program,
        nesting=nesting,
        macros=macros,
        budget=limits.expression_budget,
    )


def macro_nesting(text: str) -> tuple[int, int]:
    """How deep comprehension macros nest in `text`, and how many there are.

    Found from the source (string literals blanked out): the engine exposes no syntax tree.
    """
    blanked = _STRING_LITERAL.sub(lambda m: " " * len(m.group(0)), text)
    scopes = [
        (match.start(), _closing_paren(blanked, match.end())) for match in _MACRO.finditer(blanked)
    ]
    deepest = 0
    for start, end in scopes:
        enclosing = sum(1 for s, e in scopes if s < start and end <= e)
        deepest = max(deepest, enclosing + 1)
    return deepest, len(scopes)


@functools.lru_cache(maxsize=1024)
def _compiled(text: str) -> Any:
    # Triggers and conditions are evaluated for every conversation; a handful of distinct
    # expressions per process, each compiled once. Programs are immutable, so sharing is safe.
    return cel.compile(text)


def _bound_only_inside_macros(text: str) -> set[str]:
    """Names bound by macros that are not also used outside their macro's parentheses."""
    blanked = _STRING_LITERAL.sub(lambda m: " " * len(m.group(0)), text)
    bound: dict[str, list[tuple[int, int]]] = {}
    for match in _MACRO.finditer(blanked):
        # The scope covers the macro call itself (where the name is bound) and its body.
        scope = (match.start(), _closing_paren(blanked, match.end()))
        bound.setdefault(match.group(1), []).append(scope)
    names = set()
    for name, scopes in bound.items():
        outside = list(blanked)
        for start, end in scopes:
            outside[start:end] = " " * (end - start)
        if not re.search(rf"(?<![\w.]){re.escape(name)}\b", "".join(outside)):
            names.add(name)
    return names


def _closing_paren(text: str, start: int) -> int:
    depth = 1
    for position in range(start, len(text)):
        if text[position] == "(":
            depth += 1
        elif text[position] == ")":
            depth -= 1
            if depth == 0:
                return position
    return len(text)


def conversation_variables(conversation: Conversation) -> dict[str, Any]:
    """The variables a trigger expression sees, as plain JSON-like values.

    Dynamic variables are also bound by their own names so conditions can say
    `system__agent_turns == 0` as in the platform's own editor.
    """
    data = conversation.model_dump(mode="json")
    data["started_at"] = conversation.started_at
    data["ended_at"] = conversation.ended_at
    data["duration_seconds"] = conversation.duration_seconds
    data["turn_count"] = len(conversation.turns)
    return {**_cel_safe(conversation.dynamic_variables), **data}


def _cel_safe(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in values.items()
        if isinstance(key, str) and re.fullmatch(r"[A-Za-z_]\w*", key) and _is_plain(value)
    }


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool | datetime):
        return True
    if isinstance(value, list):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    return False
