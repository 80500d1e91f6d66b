"""How much hostile input posthoc accepts, and the walk that checks loaded data against it.

Every limit answers with a located problem (where, which rule), never a traceback or a value
from the input: conversations are customer data. The worker builds `InputLimits` from its
settings and passes it down; nothing here reads the environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from schemas.conversation import unstorable_text_problem as text_problem
from schemas.rules import Loc

MIB = 1024 * 1024


@dataclass(frozen=True)
class InputLimits:
    """Bounds on what one input may hold. The defaults fit every real conversation seen."""

    max_file_bytes: int = 64 * MIB
    """A file read whole: a YAML definition file or a `.json` conversation."""
    max_line_bytes: int = 64 * MIB
    """One line of a `.jsonl` file (one conversation); the file itself is streamed."""
    max_depth: int = 64
    """Nesting of objects and arrays (YAML mappings and sequences)."""
    max_number_chars: int = 100
    """Characters of one number literal (a 5,000-digit integer is refused)."""
    max_string_chars: int = 1_000_000
    """Characters of one string (a turn's text, a key, a metadata value)."""
    max_turns: int = 200_000
    """Turns of one conversation."""
    max_events: int = 200_000
    """Events of one conversation."""
    max_yaml_nodes: int = 100_000
    """Nodes of one YAML document with every alias expanded (billion laughs is refused)."""
    max_schema_nodes: int = 10_000
    """Values inside one output or tool input JSON Schema."""
    max_expression_nesting: int = 3
    """Comprehension macros (`all`, `exists`, `map`, ...) nested inside each other in CEL."""
    expression_budget: int = 500_000
    """Estimated steps one CEL evaluation may take; more fails the evaluation with a reason."""
    max_problems_per_record: int = 20
    """Problems reported for one record before the rest are summarised as one."""


DEFAULT_LIMITS = InputLimits()


@dataclass(frozen=True)
class LimitViolation:
    """One exceeded limit: where inside the record, which rule, and a message without data."""

    loc: Loc
    rule: str
    message: str


def structure_violations(data: Any, limits: InputLimits) -> Iterator[LimitViolation]:
    """Every place in JSON-like `data` that breaks a limit: depth, string size, unstorable text.

    Iterative, so a deep document cannot exhaust the stack; shared (aliased) containers are
    visited once, so a YAML alias graph cannot make the walk exponential.
    """
    stack: list[tuple[Loc, Any, int]] = [((), data, 0)]
    seen: set[int] = set()
    while stack:
        loc, value, depth = stack.pop()
        if isinstance(value, str):
            yield from _string_violations(loc, value, limits)
            continue
        if not isinstance(value, dict | list):
            continue
        if id(value) in seen:
            continue
        seen.add(id(value))
        if depth >= limits.max_depth:
            yield LimitViolation(
                loc, "nesting-depth", f"nested deeper than {limits.max_depth} levels"
            )
            continue
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str):
                    problem = text_problem(key) or _too_long(key, limits)
                    if problem is not None:
                        yield LimitViolation(loc, "text-storable", f"a key {problem}")
                        continue
                stack.append(((*loc, key), item, depth + 1))
        else:
            stack.extend(((*loc, index), item, depth + 1) for index, item in enumerate(value))


def conversation_violations(data: Any, limits: InputLimits) -> list[LimitViolation]:
    """Limits of one raw conversation (before its shape is validated), at most a page of them."""
    found: list[LimitViolation] = []
    if isinstance(data, dict):
        for name, limit in (("turns", limits.max_turns), ("events", limits.max_events)):
            items = data.get(name)
            if isinstance(items, list) and len(items) > limit:
                found.append(
                    LimitViolation(
                        (name,),
                        f"{name}-count",
                        f"{len(items)} {name}; at most {limit} are accepted per conversation",
                    )
                )
    if found:
        return found  # counts first: walking a million turns to list more problems is waste
    for violation in structure_violations(data, limits):
        found.append(violation)
        if len(found) >= limits.max_problems_per_record:
            break
    return found


def _string_violations(loc: Loc, text: str, limits: InputLimits) -> Iterator[LimitViolation]:
    problem = text_problem(text)
    if problem is not None:
        yield LimitViolation(loc, "text-storable", problem)
    too_long = _too_long(text, limits)
    if too_long is not None:
        yield LimitViolation(loc, "string-size", too_long)


def _too_long(text: str, limits: InputLimits) -> str | None:
    if len(text) <= limits.max_string_chars:
        return None
    return f"is {len(text)} characters long; at most {limits.max_string_chars} are accepted"


_process_limits: InputLimits = DEFAULT_LIMITS


def use_limits(limits: InputLimits) -> None:
    """Make `limits` this process's limits wherever a caller passes none: loading files,
    checking definitions, and compiling CEL for triggers, `if` conditions and sink routing.

    The worker calls this once at start-up with the configured limits (`POSTHOC_MAX_*`,
    `POSTHOC_EXPRESSION_BUDGET`), as it configures logging: the pure code below it reads no
    environment, and threading a limits object through every caller that evaluates CEL would
    put settings into the runtime's signatures.
    """
    global _process_limits  # noqa: PLW0603 - one process-wide setting, set at start-up
    _process_limits = limits


def active_limits(limits: InputLimits | None = None) -> InputLimits:
    """`limits` when given, else the process's (see `use_limits`)."""
    return limits if limits is not None else _process_limits
