"""Capture, pure: a successful conversation's event log -> the steps of a candidate procedure,
and whether a candidate is a near-duplicate of a procedure already stored.

The steps come from the event log deterministically; only the words (name, trigger, patterns,
instruction texts) are the model's (`analyzers.runtime.capture_support` joins the two).

- **Steps**: the successful tool calls in order (an exact repeat of the previous call, a retry,
  is one step; a tool called again later gets an `id` such as `order_lookup_2`).
- **Argument templates**: a value equal to a field of an earlier call's result becomes
  `{{that_step.result.field}}` (the later call depended on it); a value that recurs across calls
  or that the customer said becomes a named `{{parameter}}` (named after its argument, prefixed
  with the tool's first word when the argument's name is generic: `vendor_name`); other values
  stay literal.
- **Conditions**: when a call's result was empty (`null`, `[]`, `{}`, `""`) and calls followed,
  those calls depended on it: they are nested in `if: <step>.result == null` (or
  `size(<step>.result) == 0`). Only the first such call branches (an `if` cannot nest).
- **Near-duplicates**: a candidate with the same trigger as a stored procedure (same name, or a
  stored pattern matches what the customer said) whose tools are the stored one's up to optional
  steps is the same procedure: it adds support, or (with extra steps, or missing ones) becomes a
  new version in which the differing steps are optional. Never a second overlapping procedure.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from analyzers.definitions.patterns import PatternError, compile_pattern
from analyzers.procedures.tool_calls import ToolCall, same_value, tool_calls
from schemas.conversation import Conversation
from schemas.procedure import Procedure, ToolStep

MIN_TOOL_CALLS = 2
"""Fewer successful tool calls than this is not a multi-step procedure."""

MAX_CAPTURED_STEPS = 30
"""Tool calls beyond this many are not captured (a procedure is a handful of steps)."""

MIN_SAID_CHARS = 3
"""A value shorter than this is not looked for in what the customer said (`1`, `no`)."""

GENERIC_KEYS = frozenset({"name", "id", "value", "query", "type", "email", "number", "ref"})
"""Argument names that say too little alone: prefixed with the tool's first word."""

CUSTOMER_TEXT_LIMIT = 50_000
"""Characters of what the customer said that are searched for argument values."""

RESULT_NODES_SEEN = 2_000
RESULT_DEPTH = 6
RESULT_ITEMS_SEEN = 20
"""How much of an earlier result is searched for a later argument's value."""

_NAME = re.compile(r"[^a-z0-9_]+")
_CAPTURABLE_TOOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,55}")
"""A tool name a step can carry, with room for an `_N` suffix when it is called again."""


@dataclass(frozen=True)
class CapturedStep:
    """One captured tool step: its tool, result name and argument template."""

    tool: str
    id: str | None
    arguments: dict[str, Any]
    event_index: int

    @property
    def result_name(self) -> str:
        return self.id or self.tool


@dataclass(frozen=True)
class Captured:
    """The steps of a candidate procedure derived from one conversation.

    `branch_after` is the position (in `steps`) of the call whose empty result the later calls
    depended on, with the condition on it; None when no call branched.
    """

    steps: tuple[CapturedStep, ...]
    parameters: tuple[str, ...]
    branch_after: int | None = None
    condition: str | None = None

    @property
    def tools(self) -> tuple[str, ...]:
        return tuple(step.tool for step in self.steps)

    def numbered(self) -> list[tuple[str, CapturedStep]]:
        """Each step with the number the procedure outline will give it (`3`, `3.1`)."""
        if self.branch_after is None:
            return [(str(i), step) for i, step in enumerate(self.steps, start=1)]
        head = [(str(i), step) for i, step in enumerate(self.steps[: self.branch_after + 1], 1)]
        branch = str(self.branch_after + 2)
        tail = self.steps[self.branch_after + 1 :]
        return head + [(f"{branch}.{i}", step) for i, step in enumerate(tail, start=1)]

    def step_dicts(self, instructions: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """The steps as a procedure's `steps` (instruction texts by step number, if given)."""
        texts = instructions or {}
        made: dict[str, dict[str, Any]] = {}
        for number, step in self.numbered():
            entry: dict[str, Any] = {"tool": step.tool, "arguments": step.arguments}
            if step.id is not None:
                entry["id"] = step.id
            if texts.get(number):
                entry["instruction"] = texts[number]
            made[number] = entry
        if self.branch_after is None:
            return list(made.values())
        head = [made[str(i)] for i in range(1, self.branch_after + 2)]
        branch = str(self.branch_after + 2)
        nested = [entry for number, entry in made.items() if number.startswith(f"{branch}.")]
        return [*head, {"if": {"expression": self.condition}, "steps": nested}]


def capture_steps(conversation: Conversation) -> Captured | None:
    """The candidate steps of `conversation`'s event log, or None with fewer than two calls."""
    calls = _distinct_calls(conversation)
    if len(calls) < MIN_TOOL_CALLS:
        return None
    said = _customer_text(conversation)
    # Each step's result name is unique: a tool called again gets `tool_2`, `tool_3`, ...
    used: set[str] = set()
    ids: list[str | None] = []
    for call in calls:
        name, number = call.tool, 1
        while name in used:
            number += 1
            name = f"{call.tool}_{number}"
        used.add(name)
        ids.append(None if name == call.tool else name)
    templates = _Templates(_recurring_values(calls), said)
    steps: list[CapturedStep] = []
    for call, step_id in zip(calls, ids, strict=True):
        earlier = [(s.result_name, c.result) for s, c in zip(steps, calls, strict=False)]
        arguments = templates.arguments(call, earlier)
        steps.append(CapturedStep(call.tool, step_id, arguments, call.index))
    branch_after, condition = _branch(steps, calls)
    return Captured(tuple(steps), tuple(templates.names.order), branch_after, condition)


def candidate_procedure(
    captured: Captured,
    conversation: Conversation,
    *,
    name: str,
    trigger_description: str,
    patterns: Sequence[str] = (),
    description: str = "",
    instructions: dict[str, str] | None = None,
) -> Procedure:
    """A learned (pending) procedure from the captured steps and the model's words.

    Instruction texts are kept without `{{...}}` (the model's text cannot declare placeholders);
    patterns that do not compile are dropped.
    """
    texts = {
        number: _PLACEHOLDER_BRACES.sub("", text).strip()
        for number, text in (instructions or {}).items()
    }
    sound_patterns = [p for p in patterns if _compiles(p)]
    return Procedure.model_validate(
        {
            "name": name,
            "version": 1,
            "description": description,
            "trigger": {"description": trigger_description, "patterns": sound_patterns},
            "parameters": [{"name": parameter} for parameter in captured.parameters],
            "steps": captured.step_dicts(texts),
            "tenant_id": conversation.tenant_id,
            "agent_id": conversation.agent_id,
            "created_by": "learned",
            "approved": False,
        }
    )


# --- near-duplicates --------------------------------------------------------------------------


@dataclass(frozen=True)
class Duplicate:
    """A stored procedure the candidate duplicates: `support` (the stored one covers it as is)
    or `new_version` (`merged`: the stored one with the differing steps made optional)."""

    existing: Procedure
    kind: Literal["support", "new_version"]
    merged: Procedure | None = None


def tool_sequence(procedure: Procedure, *, required_only: bool = False) -> tuple[str, ...]:
    """The tools of `procedure`'s tool steps in running order (nested ones included)."""
    return tuple(
        step.tool
        for _loc, step in procedure.walk_steps()
        if isinstance(step, ToolStep) and not (required_only and step.optional)
    )


def same_trigger(existing: Procedure, candidate: Procedure, customer_text: str) -> bool:
    """Whether the candidate answers the same request: same name, or one of the stored
    procedure's patterns matches what the customer said, or they share a pattern."""
    if existing.name == candidate.name:
        return True
    if set(existing.trigger.patterns) & set(candidate.trigger.patterns):
        return True
    for source in existing.trigger.patterns:
        try:
            if compile_pattern(source).search(customer_text[:CUSTOMER_TEXT_LIMIT]) is not None:
                return True
        except PatternError:
            continue
    return False


def find_duplicate(
    candidate: Procedure, existing: Iterable[Procedure], customer_text: str
) -> Duplicate | None:
    """The stored procedure `candidate` duplicates (same scope, same trigger, same tools up to
    optional steps), preferring one it matches as is; None when it is new."""
    tools = tool_sequence(candidate)
    best: Duplicate | None = None
    for procedure in existing:
        if (procedure.tenant_id, procedure.agent_id) != (candidate.tenant_id, candidate.agent_id):
            continue
        if procedure.steps is None or not same_trigger(procedure, candidate, customer_text):
            continue
        required = tool_sequence(procedure, required_only=True)
        every = tool_sequence(procedure)
        if _is_subsequence(required, tools) and _is_subsequence(tools, every):
            return Duplicate(procedure, "support")
        common = _lcs(every, tools)
        extra = len(tools) - len(common)
        missing = len([t for t in required if t not in common]) if common else len(required)
        if len(common) >= MIN_TOOL_CALLS and extra + missing <= max(2, len(every) // 2):
            merged = merge_optional(procedure, candidate)
            if best is None:
                best = (
                    Duplicate(procedure, "new_version", merged)
                    if merged is not None
                    else Duplicate(procedure, "support")
                )
    return best


def merge_optional(existing: Procedure, candidate: Procedure) -> Procedure | None:
    """`existing` as a new version: its tool steps the candidate lacks made optional, and the
    candidate's extra tool calls inserted (optional) after the step they followed. None when the
    result would not be a sound procedure (then the caller only adds support)."""
    data = existing.model_dump(mode="json", by_alias=True, exclude_none=True)
    refs = _tool_step_refs(data["steps"])
    theirs = [(step, loc) for loc, step in candidate.walk_steps() if isinstance(step, ToolStep)]
    pairs = _lcs_pairs([ref[1]["tool"] for ref in refs], [step.tool for step, _loc in theirs])
    matched_ours = {ours for ours, _theirs in pairs}
    for position, (_container, ours) in enumerate(refs):
        if position not in matched_ours:
            ours["optional"] = True
    names = {ref[1].get("id") or ref[1]["tool"] for ref in refs}
    declared = {parameter["name"] for parameter in data.get("parameters", [])}
    after: dict[int, int] = {t: o for o, t in pairs}
    previous: int | None = None
    inserted = 0
    for index, (tool_step, _loc) in enumerate(theirs):
        if index in after:
            previous = after[index]
            continue
        extra: dict[str, Any] = {
            "tool": tool_step.tool,
            "arguments": tool_step.arguments,
            "optional": True,
        }
        result_name = tool_step.tool
        suffix = 2
        while result_name in names:
            result_name = f"{tool_step.tool}_{suffix}"[:64]
            suffix += 1
        if result_name != tool_step.tool:
            extra["id"] = result_name
        names.add(result_name)
        if previous is None:
            data["steps"].insert(inserted, extra)
        else:
            container, anchor = refs[previous]
            container.insert(next(i for i, s in enumerate(container) if s is anchor) + 1, extra)
        inserted += 1
        for parameter in candidate.parameters:
            if parameter.name not in declared:
                data.setdefault("parameters", []).append({"name": parameter.name})
                declared.add(parameter.name)
    data["version"] = existing.version + 1
    try:
        return Procedure.model_validate(data)
    except ValidationError:
        return None


# --- helpers ----------------------------------------------------------------------------------

StepRef = tuple[list[dict[str, Any]], dict[str, Any]]
"""A tool step of a dumped procedure and the list that holds it (top level or an `if`'s)."""


def _tool_step_refs(steps: list[dict[str, Any]]) -> list[StepRef]:
    refs: list[StepRef] = []
    for step in steps:
        if "tool" in step:
            refs.append((steps, step))
        elif "if" in step:
            refs.extend((step["steps"], nested) for nested in step["steps"] if "tool" in nested)
    return refs


_PLACEHOLDER_BRACES = re.compile(r"\{\{|\}\}")


def _distinct_calls(conversation: Conversation) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for call in tool_calls(conversation.events):
        if call.succeeded is False or not _CAPTURABLE_TOOL.fullmatch(call.tool):
            continue
        if (
            calls
            and calls[-1].tool == call.tool
            and same_value(calls[-1].arguments, call.arguments)
        ):
            continue  # a retry of the same call is one step
        calls.append(call)
        if len(calls) == MAX_CAPTURED_STEPS:
            break
    return calls


def _customer_text(conversation: Conversation) -> str:
    said = "\n".join(turn.text for turn in conversation.turns if turn.role == "user")
    return said[:CUSTOMER_TEXT_LIMIT].casefold()


def _is_leaf(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _key(value: Any) -> str:
    return f"{type(value).__name__}:{value}"


def _said(value: Any, said: str) -> bool:
    text = str(value).casefold()
    return len(text) >= MIN_SAID_CHARS and text in said


def _recurring_values(calls: Sequence[ToolCall]) -> set[str]:
    seen: dict[str, set[int]] = {}
    for position, call in enumerate(calls):
        for value in _leaves(call.arguments):
            seen.setdefault(_key(value), set()).add(position)
    return {key for key, positions in seen.items() if len(positions) > 1}


def _leaves(value: Any) -> Iterable[Any]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif _is_leaf(item):
            yield item


def _result_reference(value: Any, earlier: Sequence[tuple[str, Any]]) -> str | None:
    """`step.result.field` for the latest earlier result holding `value` (a leaf, not a tiny
    one, since `1` or `true` in a result says nothing about where an argument came from)."""
    if not _is_leaf(value) or len(str(value)) < MIN_SAID_CHARS:
        return None
    for result_name, result in reversed(earlier):
        path = _path_to(value, result, f"{result_name}.result")
        if path is not None:
            return path
    return None


def _path_to(value: Any, within: Any, prefix: str) -> str | None:
    """The shallowest path to `value` in a result (breadth first; at most `RESULT_NODES_SEEN`
    nodes, `RESULT_DEPTH` deep, the first `RESULT_ITEMS_SEEN` items of each list)."""
    queue: deque[tuple[str, Any, int]] = deque([(prefix, within, 0)])
    seen = 0
    while queue and seen < RESULT_NODES_SEEN:
        path, item, depth = queue.popleft()
        seen += 1
        if depth > RESULT_DEPTH:
            continue
        if isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                    queue.append((f"{path}.{key}", child, depth + 1))
        elif isinstance(item, list):
            items = item[:RESULT_ITEMS_SEEN]
            queue.extend((f"{path}[{i}]", child, depth + 1) for i, child in enumerate(items))
        elif path != prefix and _is_leaf(item) and same_value(item, value):
            return path
    return None


def _branch(
    steps: Sequence[CapturedStep], calls: Sequence[ToolCall]
) -> tuple[int | None, str | None]:
    for position, call in enumerate(calls[:-1]):
        result = call.result
        if result is None:
            return position, f"{steps[position].result_name}.result == null"
        if isinstance(result, list | dict | str) and len(result) == 0:
            return position, f"size({steps[position].result_name}.result) == 0"
    return None, None


class _ParameterNames:
    """Names parameters after their argument, each value one name, each name one value."""

    def __init__(self) -> None:
        self.by_value: dict[str, str] = {}
        self.order: list[str] = []

    def name_for(self, value: Any, key: str, tool: str) -> str:
        known = self.by_value.get(_key(value))
        if known is not None:
            return known
        base = _NAME.sub("_", key.casefold()).strip("_") or "value"
        if base in GENERIC_KEYS:
            base = f"{tool.casefold().split('_')[0]}_{base}"
        if not base[0].isalpha():
            base = f"p_{base}"
        name, suffix = base[:60], 2
        while name in self.order:
            name = f"{base[:60]}_{suffix}"
            suffix += 1
        self.by_value[_key(value)] = name
        self.order.append(name)
        return name


@dataclass
class _Templates:
    """Turns one call's literal arguments into a template (see the module docstring)."""

    recurring: set[str]
    said: str
    names: _ParameterNames = field(default_factory=_ParameterNames)

    def arguments(self, call: ToolCall, earlier: Sequence[tuple[str, Any]]) -> dict[str, Any]:
        return {
            key: self._templated(key, value, call.tool, earlier)
            for key, value in call.arguments.items()
        }

    def _templated(
        self, key: str, value: Any, tool: str, earlier: Sequence[tuple[str, Any]]
    ) -> Any:
        if isinstance(value, dict):
            return {k: self._templated(k, v, tool, earlier) for k, v in value.items()}
        if isinstance(value, list):
            return [self._templated(key, item, tool, earlier) for item in value]
        reference = _result_reference(value, earlier)
        if reference is not None:
            return "{{" + reference + "}}"
        if _is_leaf(value) and (_key(value) in self.recurring or _said(value, self.said)):
            return "{{" + self.names.name_for(value, key, tool) + "}}"
        return value


def _compiles(pattern: str) -> bool:
    try:
        compile_pattern(pattern)
    except PatternError:
        return False
    return True


def _is_subsequence(short: Sequence[str], long: Sequence[str]) -> bool:
    remaining = iter(long)
    return all(any(item == other for other in remaining) for item in short)


def _lcs(a: Sequence[str], b: Sequence[str]) -> list[str]:
    return [a[i] for i, _j in _lcs_pairs(a, b)]


def _lcs_pairs(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs of a longest common subsequence (sequences are at most a few dozen long)."""
    rows, cols = len(a), len(b)
    table = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(rows - 1, -1, -1):
        for j in range(cols - 1, -1, -1):
            table[i][j] = (
                table[i + 1][j + 1] + 1 if a[i] == b[j] else max(table[i + 1][j], table[i][j + 1])
            )
    pairs: list[tuple[int, int]] = []
    i = j = 0
    while i < rows and j < cols:
        if a[i] == b[j]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs
