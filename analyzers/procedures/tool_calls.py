"""The agent's tool calls in an event log, and argument templates matched against them. Pure.

A template is the `arguments` of a procedure's tool step: JSON in which a string that is one
`{{name}}` binds (or must equal) a parameter's value, `{{step.result.field}}` must equal what
that step's call returned, and placeholders inside a string bind the text they span.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.conversation import Event
from schemas.templates import PLACEHOLDER, root_name

TOOL_CALL_EVENTS = frozenset({"tool_call", "tool_use", "function_call"})
"""Event types that record the agent calling a tool (`name` is the tool)."""


@dataclass(frozen=True)
class ToolCall:
    """A tool-call event of the log: its position, tool, arguments and recorded result."""

    index: int
    tool: str
    arguments: dict[str, Any]
    result: Any
    succeeded: bool | None


def tool_calls(events: Sequence[Event]) -> list[ToolCall]:
    """The tool calls of an event log, in order."""
    return [
        ToolCall(index, event.name, event.arguments or {}, event.result, event.succeeded)
        for index, event in enumerate(events)
        if event.type in TOOL_CALL_EVENTS and event.name
    ]


_WHOLE_PLACEHOLDER = re.compile(r"^\s*" + PLACEHOLDER.pattern + r"\s*$")


def match_arguments(
    template: Any, actual: Any, bindings: Mapping[str, Any], results: Mapping[str, ToolCall]
) -> dict[str, Any] | None:
    """The bindings extended so that `actual` equals `template`, or None when it cannot.

    Objects must have the same keys, lists the same length; a whole-string `{{name}}` binds any
    value (or must equal the value already bound), a placeholder inside a string binds the text
    it spans, and `{{step.result.field}}` must equal what that step's call returned.
    """
    bound = dict(bindings)
    return bound if _match(template, actual, bound, results) else None


def differing_keys(
    template: Any, actual: Any, bindings: Mapping[str, Any], results: Mapping[str, ToolCall]
) -> list[str]:
    """The top-level argument names whose values do not match (names only: values are data)."""
    if not isinstance(template, dict) or not isinstance(actual, dict):
        return []
    keys = sorted(set(template) ^ set(actual))
    for key in sorted(set(template) & set(actual)):
        if not _match(template[key], actual[key], dict(bindings), results):
            keys.append(key)
    return keys


def _match(
    template: Any, actual: Any, bound: dict[str, Any], results: Mapping[str, ToolCall]
) -> bool:
    if isinstance(template, dict):
        if not isinstance(actual, dict) or set(template) != set(actual):
            return False
        return all(_match(template[key], actual[key], bound, results) for key in template)
    if isinstance(template, list):
        if not isinstance(actual, list) or len(template) != len(actual):
            return False
        return all(_match(t, a, bound, results) for t, a in zip(template, actual, strict=True))
    if isinstance(template, str) and PLACEHOLDER.search(template):
        whole = _WHOLE_PLACEHOLDER.match(template)
        if whole is not None:
            return _bind(whole.group(1), actual, bound, results)
        return _match_embedded(template, actual, bound, results)
    return same_value(template, actual)


def _bind(path: str, actual: Any, bound: dict[str, Any], results: Mapping[str, ToolCall]) -> bool:
    root = root_name(path)
    if root in results:
        found, value = _resolve(path, results)
        return found and same_value(value, actual)
    if path != root:
        return True  # a field of a parameter: nothing to compare it with
    if root in bound:
        return same_value(bound[root], actual)
    bound[root] = actual
    return True


def _match_embedded(
    template: str, actual: Any, bound: dict[str, Any], results: Mapping[str, ToolCall]
) -> bool:
    if not isinstance(actual, str):
        return False
    spans = split_embedded(template, actual)
    if spans is None:
        return False
    for path, text in spans:
        root = root_name(path)
        if root in results:
            resolved, value = _resolve(path, results)
            if not resolved or _as_text(value) != text:
                return False
        elif path == root and root in bound:
            if _as_text(bound[root]) != text:
                return False
        elif path == root:
            bound[root] = text
    return True


def split_embedded(template: str, actual: str) -> list[tuple[str, str]] | None:
    """The text each placeholder of `template` spans in `actual`, or None when the literal text
    around them does not match.

    A placeholder spans up to the first occurrence of the literal text after it (the last one,
    up to the literal ending), so `x-{{a}}-{{b}}` splits `x-1-2-3` as a=`1`, b=`2-3`. One pass
    with `str.find`: linear in the argument, whatever the template (a regular expression with
    a lazy group per placeholder would backtrack polynomially on a long argument).
    """
    literals: list[str] = []
    paths: list[str] = []
    last = 0
    for found in PLACEHOLDER.finditer(template):
        literals.append(template[last : found.start()])
        paths.append(found.group(1))
        last = found.end()
    literals.append(template[last:])
    if not actual.startswith(literals[0]):
        return None
    rest = actual[len(literals[0]) :]
    spans: list[tuple[str, str]] = []
    for position, path in enumerate(paths):
        after = literals[position + 1]
        if position == len(paths) - 1:
            if len(rest) < len(after) or not rest.endswith(after):
                return None
            spans.append((path, rest[: len(rest) - len(after)]))
            return spans
        index = rest.find(after)
        if index < 0:
            return None
        spans.append((path, rest[:index]))
        rest = rest[index + len(after) :]
    return spans


def _resolve(path: str, results: Mapping[str, ToolCall]) -> tuple[bool, Any]:
    """`step.result.field[0]` looked up in the recorded calls; (False, None) when absent."""
    tokens = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|\[\d+\]", path)
    call = results[tokens[0]]
    value: Any = {"result": call.result, "arguments": call.arguments}
    for token in tokens[1:]:
        if token.startswith("["):
            index = int(token[1:-1])
            if not isinstance(value, list) or index >= len(value):
                return False, None
            value = value[index]
        elif isinstance(value, dict) and token in value:
            value = value[token]
        else:
            return False, None
    return True, value


def same_value(expected: Any, actual: Any) -> bool:
    """JSON equality: `1` and `1.0` are equal, `true` and `1` are not."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return expected == actual
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, dict):
        return set(expected) == set(actual) and all(
            same_value(expected[key], actual[key]) for key in expected
        )
    if isinstance(expected, list):
        return len(expected) == len(actual) and all(
            same_value(e, a) for e, a in zip(expected, actual, strict=True)
        )
    return bool(expected == actual)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)
