"""Built-in read-only tools over the conversation being analysed, and how turns and events read.

They let an agent read a long conversation in parts instead of all at once. Analyzers list them
by name under `tools:`.

`render_turn` and `render_event` are the one rendering of the transcript: the prompt builder uses
them for the transcript block and these tools use them for their results, so a turn reads the
same wherever the model sees it. Both are pure and deterministic (the prompt cache depends on it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from analyzers.errors import ConfigError
from analyzers.tools.base import JSON, ReadCoverage, Tool, ToolContext, ToolKind, ToolOutcome
from analyzers.tools.http import argument_problems
from schemas.conversation import Conversation, Event, Turn

BUILTIN_TOOL_NAMES = frozenset({"get_turns", "get_events", "search_conversation"})
"""`get_turns` (a range of turns), `get_events` (a range of events), `search_conversation`
(turns and events containing a text)."""

MAX_TURNS_PER_CALL = 80
MAX_EVENTS_PER_CALL = 50
MAX_SEARCH_RESULTS = 50
EVENT_VALUE_CHARS = 500
"""How much of an event's arguments or result (as compact JSON) is shown before truncation."""

TRUNCATED = "…(truncated)"

_CONTINUATION_INDENT = "    "


# --- rendering ---------------------------------------------------------------------------------


def render_turn(index: int, turn: Turn) -> str:
    """`[12] user 10:03:11: text`: the turn number, role, UTC time (when known) and text.

    Line breaks inside the text are kept but the continuation lines are indented, so that a line
    starting with `[n]` is always the start of a turn; a customer cannot forge one by typing it.
    """
    when = f" {_clock(turn.at)}" if turn.at is not None else ""
    # splitlines, not split("\n"): \r, \u2028 and friends read as line breaks too.
    text = ("\n" + _CONTINUATION_INDENT).join(turn.text.splitlines())
    return f"[{index}] {turn.role}{when}: {text}"


def render_event(index: int, event: Event) -> str:
    """An event as a header line plus indented detail lines.

    `[e3] after turn 5 · tool_call vendor_create · ok · 342 ms · procedure vendor_onboarding
    step 3 · at 10:03:14`, then `arguments:`, `result:` and `metadata:` lines in compact JSON,
    each cut at about 500 characters with an explicit `…(truncated)` marker.
    """
    parts: list[str] = []
    if event.turn_index is not None:
        parts.append(f"after turn {event.turn_index}")
    parts.append(_one_line(event.type if event.name is None else f"{event.type} {event.name}"))
    if event.succeeded is not None:
        parts.append("ok" if event.succeeded else "failed")
    if event.duration_ms is not None:
        parts.append(f"{event.duration_ms} ms")
    if event.procedure_name is not None:
        procedure = f"procedure {_one_line(event.procedure_name)}"
        if event.procedure_step_order is not None:
            procedure += f" step {event.procedure_step_order}"
        parts.append(procedure)
    if event.at is not None:
        parts.append(f"at {_clock(event.at)}")
    lines = [f"[e{index}] " + " · ".join(parts)]
    if event.arguments is not None:
        lines.append(f"{_CONTINUATION_INDENT}arguments: {_compact(event.arguments)}")
    if event.result is not None:
        lines.append(f"{_CONTINUATION_INDENT}result: {_compact(event.result)}")
    if event.metadata:
        lines.append(f"{_CONTINUATION_INDENT}metadata: {_compact(event.metadata)}")
    return "\n".join(lines)


def _clock(moment: datetime) -> str:
    # An f-string, not strftime: this runs for every turn of every prompt.
    utc = moment if moment.utcoffset() == _ZERO else moment.astimezone(UTC)
    return f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"


_ZERO = timedelta(0)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _compact(value: Any, limit: int = EVENT_VALUE_CHARS) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[:limit] + TRUNCATED


# --- tools -------------------------------------------------------------------------------------


def _range_schema(what: str, cap: int) -> JSON:
    return {
        "type": "object",
        "properties": {
            "first": {
                "type": "integer",
                "minimum": 0,
                "description": f"Number of the first {what} to return (0-based, inclusive).",
            },
            "last": {
                "type": "integer",
                "minimum": 0,
                "description": (
                    f"Number of the last {what} to return (inclusive). At most {cap} {what}s "
                    "come back per call."
                ),
            },
        },
        "required": ["first", "last"],
        "additionalProperties": False,
    }


def _invalid(tool: str, problems: list[str]) -> ToolOutcome:
    listed = "\n".join(f"- {problem}" for problem in problems)
    return ToolOutcome(f"invalid input for {tool}:\n{listed}", is_error=True)


@dataclass(frozen=True)
class _Window:
    """The part of a requested inclusive range that one call returns."""

    first: int
    last: int
    requested_last: int
    total: int


def _window(what: str, first: int, last: int, total: int, cap: int) -> _Window | str:
    """The range to return, or a message explaining why the range is not valid."""
    if total == 0:
        return f"the conversation has no {what}s"
    valid = f"{what} numbers run from 0 to {total - 1}"
    if first > last:
        return f"first ({first}) is after last ({last}); give first ≤ last ({valid})"
    if first >= total:
        return f"first ({first}) is past the end: {valid}"
    # A `last` past the end is read as "to the end": asking for 0..9999 to get everything is a
    # reasonable request, and refusing it would only cost the model another call.
    requested_last = min(last, total - 1)
    return _Window(first, min(requested_last, first + cap - 1), requested_last, total)


def _read_range(
    tool: str,
    what: str,
    arguments: JSON,
    total: int,
    cap: int,
    render: Callable[[int], str],
    coverage: ReadCoverage | None = None,
) -> ToolOutcome:
    """The shared body of get_turns and get_events: check the range, render it, say what is left."""
    asked_first, asked_last = arguments["first"], arguments["last"]
    window = _window(what, asked_first, asked_last, total, cap)
    if isinstance(window, str):
        return ToolOutcome(window, is_error=True)
    if coverage is not None:
        coverage.mark(window.first, window.last)
    lines = [
        f"{what.capitalize()}s {window.first}–{window.last} of {total} (numbered 0–{total - 1}):"
    ]
    lines += [render(index) for index in range(window.first, window.last + 1)]
    if asked_last > window.requested_last:
        lines.append(f"(last {asked_last} is past the end; the last {what} is {total - 1}.)")
    if window.last < window.requested_last:
        lines.append(
            f"(Capped at {cap} {what}s per call. For the rest call {tool} with "
            f"first={window.last + 1}, last={window.requested_last}.)"
        )
    return ToolOutcome("\n".join(lines))


class GetTurns:
    """`get_turns(first, last)`: a range of the transcript, marked as read."""

    name = "get_turns"
    kind: ToolKind = "builtin"
    cap = MAX_TURNS_PER_CALL

    def definition(self) -> JSON:
        return {
            "name": self.name,
            "description": (
                "Read turns `first` to `last` (both inclusive) of the conversation transcript. "
                "Turn numbers start at 0 and are the numbers in brackets in the transcript, "
                "e.g. `[12] user 10:03:11: ...` is turn 12 (times are UTC). At most "
                f"{self.cap} turns come back per call; the result says which range to ask for "
                "next. Use it to read parts of the conversation you have not been shown, or to "
                "re-read a passage before citing it."
            ),
            "input_schema": _range_schema("turn", self.cap),
        }

    async def call(self, arguments: JSON, context: ToolContext) -> ToolOutcome:
        problems = argument_problems(self.definition()["input_schema"], arguments)
        if problems:
            return _invalid(self.name, problems)
        turns = context.conversation.turns
        return _read_range(
            self.name,
            "turn",
            arguments,
            len(turns),
            self.cap,
            lambda index: render_turn(index, turns[index]),
            context.coverage,
        )


class GetEvents:
    """`get_events(first, last)`: a range of the event log (tool calls, transfers, errors)."""

    name = "get_events"
    kind: ToolKind = "builtin"
    cap = MAX_EVENTS_PER_CALL

    def definition(self) -> JSON:
        return {
            "name": self.name,
            "description": (
                "Read events `first` to `last` (both inclusive) of the conversation's event log: "
                "the agent's tool calls with their arguments and results, transfers, procedure "
                "steps and errors. Event numbers start at 0 and are shown as `[e3]`; "
                "`after turn 5` places an event in the transcript. At most "
                f"{self.cap} events come back per call; the result says which range to ask for "
                "next. Arguments and results longer than about "
                f"{EVENT_VALUE_CHARS} characters are cut and marked `{TRUNCATED}`."
            ),
            "input_schema": _range_schema("event", self.cap),
        }

    async def call(self, arguments: JSON, context: ToolContext) -> ToolOutcome:
        problems = argument_problems(self.definition()["input_schema"], arguments)
        if problems:
            return _invalid(self.name, problems)
        events = context.conversation.events
        return _read_range(
            self.name,
            "event",
            arguments,
            len(events),
            self.cap,
            lambda index: render_event(index, events[index]),
        )


@dataclass(frozen=True)
class _Hit:
    """One matching turn or event, with what ranks it."""

    exact: bool
    count: int
    position: tuple[int, int, int]
    text: str
    turn: int | None

    def rank(self) -> tuple[int, int, tuple[int, int, int]]:
        return (0 if self.exact else 1, -self.count, self.position)


class SearchConversation:
    """`search_conversation(query, limit)`: turns and events containing a text, best first."""

    name = "search_conversation"
    kind: ToolKind = "builtin"

    def definition(self) -> JSON:
        return {
            "name": self.name,
            "description": (
                "Find the turns and events that mention something, ignoring case: the turn texts "
                "and the events' names, arguments and results are searched. A turn or event "
                "containing the exact query ranks first; one containing all of its words in any "
                "order also matches, below those. Results come best first, then in conversation "
                "order, each turn with its number (`[12] ...`) and each event with its number "
                "(`[e3] ...`), so you can read around a hit with get_turns or get_events. The "
                "result also says how many matches there are in total."
            ),
            "input_schema": {
                "type": "object",
                "properties": {
                    "query": {
                        "type": "string",
                        "minLength": 1,
                        "description": "Words or a phrase to look for, e.g. `refund` or "
                        "`cancel my order`.",
                    },
                    "limit": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_SEARCH_RESULTS,
                        "default": 20,
                        "description": "How many matches to return at most (default 20).",
                    },
                },
                "required": ["query"],
                "additionalProperties": False,
            },
        }

    async def call(self, arguments: JSON, context: ToolContext) -> ToolOutcome:
        problems = argument_problems(self.definition()["input_schema"], arguments)
        if problems:
            return _invalid(self.name, problems)
        query: str = arguments["query"]
        limit: int = arguments.get("limit", 20)
        words = query.casefold().split()
        if not words:
            return ToolOutcome(
                "the query is empty: give a word or phrase to search for", is_error=True
            )
        hits = sorted(_search(context.conversation, words), key=_Hit.rank)
        if not hits:
            return ToolOutcome(f"No turn or event mentions {query!r}.")
        shown = hits[:limit]
        for hit in shown:
            if hit.turn is not None:
                context.coverage.mark(hit.turn, hit.turn)
        turn_count = sum(1 for hit in hits if hit.turn is not None)
        header = (
            f"{len(hits)} match(es) for {query!r}: {turn_count} turn(s), "
            f"{len(hits) - turn_count} event(s)."
        )
        if len(hits) > limit:
            header += (
                f" Showing the {limit} most relevant; raise `limit` (up to "
                f"{MAX_SEARCH_RESULTS}) or narrow the query to see others."
            )
        return ToolOutcome("\n".join([header, *(hit.text for hit in shown)]))


def _search(conversation: Conversation, words: list[str]) -> list[_Hit]:
    phrase = " ".join(words)
    hits: list[_Hit] = []
    for index, turn in enumerate(conversation.turns):
        hit = _match(_normalised(turn.text), phrase, words)
        if hit is not None:
            exact, count = hit
            hits.append(_Hit(exact, count, (index, 0, 0), render_turn(index, turn), index))
    after_all_turns = len(conversation.turns)
    for index, event in enumerate(conversation.events):
        hit = _match(_normalised(_event_haystack(event)), phrase, words)
        if hit is not None:
            exact, count = hit
            # An event sits right after its turn; one whose turn is unknown goes last.
            anchor = event.turn_index if event.turn_index is not None else after_all_turns
            hits.append(_Hit(exact, count, (anchor, 1, index), render_event(index, event), None))
    return hits


def _match(haystack: str, phrase: str, words: list[str]) -> tuple[bool, int] | None:
    """(exact phrase found, occurrences) when `haystack` matches, else None."""
    occurrences = haystack.count(phrase)
    if occurrences:
        return True, occurrences
    counts = [haystack.count(word) for word in words]
    if all(counts):
        return False, sum(counts)
    return None


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def _event_haystack(event: Event) -> str:
    parts = [event.type, event.name or "", event.procedure_name or ""]
    for value in (event.arguments, event.result):
        if value is not None:
            parts.append(json.dumps(value, ensure_ascii=False, default=str))
    return " ".join(parts)


_TOOLS: dict[str, type[GetTurns | GetEvents | SearchConversation]] = {
    "get_turns": GetTurns,
    "get_events": GetEvents,
    "search_conversation": SearchConversation,
}


def builtin_tools(names: Iterable[str]) -> list[Tool]:
    """The built-in tools called `names`, in the order given.

    Raises `ConfigError` for a name that is not a built-in tool (`checks.py` reports that when the
    analyzer is loaded, so reaching it here means the checks were skipped).
    """
    names = list(names)
    unknown = sorted(set(names) - BUILTIN_TOOL_NAMES)
    if unknown:
        raise ConfigError(
            f"unknown built-in tool(s) {unknown} (known: {sorted(BUILTIN_TOOL_NAMES)})"
        )
    return [_TOOLS[name]() for name in names]
