"""Read-only ledger tools for standalone analyzers (`input: results`).

A standalone analyzer runs over stored results instead of one conversation (a daily digest of
open follow-ups, a roll-up of one customer's conversations). It reads them through two tools:
`query_results` (results by analyzer, output field, time range and tenant) and
`get_conversation` (one stored conversation, rendered as the transcript tools render it).

The runtime knows nothing of databases: the worker supplies a `ResultsReader` that answers
these queries from its ledger, bounded to the selection the run was recorded for (its tenant
and time window). Nothing here can write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from analyzers.tools.base import JSON, Tool, ToolContext, ToolKind, ToolOutcome
from analyzers.tools.conversation import builtin_tools, render_event, render_turn
from analyzers.tools.http import argument_problems
from schemas.conversation import Conversation

RESULTS_TOOL_NAMES = frozenset({"query_results", "get_conversation"})
"""Tools only `input: results` analyzers may list."""

MAX_RESULTS_PER_CALL = 50
MAX_CONVERSATION_TURNS = 200
MAX_CONVERSATION_EVENTS = 100
RESULT_CHARS = 2_000
"""How much of one result's outputs (compact JSON) is shown before it is cut."""


@dataclass(frozen=True)
class ResultsQuery:
    """One `query_results` call, after its arguments were checked."""

    analyzer: str
    field: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    limit: int = 20
    offset: int = 0


@dataclass(frozen=True)
class StoredResult:
    """One stored result, as the tool shows it: who, when, and the recorded values."""

    run_id: str
    conversation_id: str
    tenant_id: str
    analyzer: str
    analyzer_version: str
    finished_at: datetime
    outputs: dict[str, list[Any]]


class ResultsReader(Protocol):
    """What the worker provides for one standalone run: reads bounded to its selection."""

    @property
    def scope(self) -> str:
        """One line saying which tenant and time range this reader sees (for the model)."""
        ...

    async def query(self, query: ResultsQuery) -> Sequence[StoredResult]:
        """Succeeded results of `query.analyzer`, newest first, within the reader's bounds."""
        ...

    async def conversation(self, conversation_id: str, tenant: str | None) -> Conversation | None:
        """The stored conversation (its current content), or None if the reader may not see it."""
        ...


def _invalid(tool: str, problems: list[str]) -> ToolOutcome:
    listed = "\n".join(f"- {problem}" for problem in problems)
    return ToolOutcome(f"invalid input for {tool}:\n{listed}", is_error=True)


def _parse_time(value: Any, name: str, problems: list[str]) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        problems.append(f"$.{name}: {value!r} is not an ISO 8601 time")
        return None
    if moment.tzinfo is None:
        problems.append(f"$.{name}: give a time zone (e.g. 2026-11-30T00:00:00Z)")
        return None
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        problems.append(f"$.{name}: {value!r} is out of range")
        return None


def _no_reader(tool: str) -> ToolOutcome:
    return ToolOutcome(
        f"{tool} is not available in this run: it only works for standalone analyzers "
        "(input: results) run by the worker",
        is_error=True,
    )


class QueryResults:
    """`query_results(analyzer, field?, since?, until?, tenant?, limit?, offset?)`."""

    name = "query_results"
    kind: ToolKind = "builtin"

    def definition(self) -> JSON:
        return {
            "name": self.name,
            "description": (
                "List stored results of another analyzer (succeeded runs only), newest first. "
                "`field` keeps only results that recorded at least one value of that output "
                "and shows only that output. `since`/`until` are ISO 8601 times with a zone; "
                "the run's own time range and tenant always apply. At most "
                f"{MAX_RESULTS_PER_CALL} results per call; page with `offset`."
            ),
            "input_schema": {
                "type": "object",
                "properties": {
                    "analyzer": {"type": "string", "minLength": 1, "maxLength": 200},
                    "field": {"type": "string", "minLength": 1, "maxLength": 200},
                    "since": {"type": "string", "maxLength": 64},
                    "until": {"type": "string", "maxLength": 64},
                    "tenant": {"type": "string", "minLength": 1, "maxLength": 200},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS_PER_CALL},
                    "offset": {"type": "integer", "minimum": 0, "maximum": 100_000},
                },
                "required": ["analyzer"],
                "additionalProperties": False,
            },
        }

    async def call(self, arguments: JSON, context: ToolContext) -> ToolOutcome:
        problems = argument_problems(self.definition()["input_schema"], arguments)
        if problems:
            return _invalid(self.name, problems)
        reader = context.results
        if reader is None:
            return _no_reader(self.name)
        since = _parse_time(arguments.get("since"), "since", problems)
        until = _parse_time(arguments.get("until"), "until", problems)
        if problems:
            return _invalid(self.name, problems)
        query = ResultsQuery(
            analyzer=arguments["analyzer"],
            field=arguments.get("field"),
            since=since,
            until=until,
            tenant=arguments.get("tenant"),
            limit=int(arguments.get("limit", 20)),
            offset=int(arguments.get("offset", 0)),
        )
        found = await reader.query(query)
        lines = [f"{reader.scope}; {len(found)} result(s) from offset {query.offset}:"]
        for item in found:
            outputs = (
                {query.field: item.outputs.get(query.field, [])} if query.field else item.outputs
            )
            shown = json.dumps(outputs, ensure_ascii=False, separators=(",", ":"), default=str)
            if len(shown) > RESULT_CHARS:
                shown = shown[:RESULT_CHARS] + "…(truncated)"
            lines.append(
                f"- run {item.run_id} · conversation {item.conversation_id} · tenant "
                f"{item.tenant_id} · {item.analyzer}@{item.analyzer_version} · finished "
                f"{item.finished_at.isoformat()}\n    outputs: {shown}"
            )
        if len(found) == query.limit:
            lines.append(f"(More may follow: call again with offset={query.offset + query.limit}.)")
        return ToolOutcome("\n".join(lines))


class GetStoredConversation:
    """`get_conversation(conversation_id, tenant?)`: one stored conversation's transcript."""

    name = "get_conversation"
    kind: ToolKind = "builtin"

    def definition(self) -> JSON:
        return {
            "name": self.name,
            "description": (
                "Read one stored conversation named by a result (its turns and event log, "
                f"the first {MAX_CONVERSATION_TURNS} turns and {MAX_CONVERSATION_EVENTS} "
                "events). Only conversations of the run's tenant can be read."
            ),
            "input_schema": {
                "type": "object",
                "properties": {
                    "conversation_id": {"type": "string", "minLength": 1, "maxLength": 200},
                    "tenant": {"type": "string", "minLength": 1, "maxLength": 200},
                },
                "required": ["conversation_id"],
                "additionalProperties": False,
            },
        }

    async def call(self, arguments: JSON, context: ToolContext) -> ToolOutcome:
        problems = argument_problems(self.definition()["input_schema"], arguments)
        if problems:
            return _invalid(self.name, problems)
        reader = context.results
        if reader is None:
            return _no_reader(self.name)
        found = await reader.conversation(arguments["conversation_id"], arguments.get("tenant"))
        if found is None:
            return ToolOutcome(
                f"no conversation {arguments['conversation_id']!r} in this run's scope "
                f"({reader.scope})",
                is_error=True,
            )
        header = (
            f"conversation {found.conversation_id} · tenant {found.tenant_id} · outcome "
            f"{found.outcome or 'unknown'} · {len(found.turns)} turn(s), "
            f"{len(found.events)} event(s)"
        )
        lines = [header]
        lines += [
            render_turn(index, turn)
            for index, turn in enumerate(found.turns[:MAX_CONVERSATION_TURNS])
        ]
        lines += [
            render_event(index, event)
            for index, event in enumerate(found.events[:MAX_CONVERSATION_EVENTS])
        ]
        return ToolOutcome("\n".join(lines))


def named_tools(names: Sequence[str]) -> list[Tool]:
    """The tools an analyzer lists by name: the conversation readers, then the ledger tools."""
    readers = builtin_tools([name for name in names if name not in RESULTS_TOOL_NAMES])
    return [*readers, *results_tools(names)]


def results_tools(names: Sequence[str]) -> list[Tool]:
    """The ledger tools among `names`, in the order given (other names are ignored)."""
    tools: dict[str, type[QueryResults] | type[GetStoredConversation]] = {
        QueryResults.name: QueryResults,
        GetStoredConversation.name: GetStoredConversation,
    }
    return [tools[name]() for name in names if name in tools]
