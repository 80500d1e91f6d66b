"""Tools a procedural agent can call, and the registry the run loop dispatches through.

Every tool has a definition (name, description, input JSON Schema) that goes to the model, and
an async `call` that the runtime awaits. A call never raises for a problem the model can fix (bad
arguments, a 404 from an HTTP tool): it returns a `ToolOutcome` with `is_error=True` and a message
the model reads. Only the runtime's own failures propagate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from analyzers.tools.effects import RunEffects
from schemas.conversation import Conversation
from schemas.result import WriteEffect

if TYPE_CHECKING:
    from analyzers.tools.stored_results import ResultsReader

JSON = dict[str, Any]
ToolKind = Literal["builtin", "http", "output", "procedure"]


@dataclass(frozen=True)
class ToolOutcome:
    """What a tool call produced: `output` goes back to the model as the tool_result."""

    output: Any
    is_error: bool = False
    effect: WriteEffect | None = None
    """Set by write-effect HTTP calls: the key sent, or that the outcome was replayed."""


@dataclass(frozen=True)
class HttpRequest:
    """One outgoing request of an HTTP tool, after templates are filled."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: Any
    timeout_seconds: float


@dataclass(frozen=True)
class HttpResponse:
    """What came back: the status and the body, parsed as JSON when it is JSON."""

    status: int
    body: Any


class HttpTransport(Protocol):
    """The edge that really sends HTTP tool requests; the worker supplies one."""

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send `request`; raise `OSError` or `TimeoutError` when it cannot be completed."""
        ...


@dataclass
class ReadCoverage:
    """Which turns the model has been shown, to say honestly whether it read them all."""

    total_turns: int
    seen: set[int] = field(default_factory=set)

    def mark(self, first: int, last: int) -> None:
        """Record that turns `first`..`last` (inclusive) were shown to the model."""
        self.seen.update(range(max(first, 0), min(last, self.total_turns - 1) + 1))

    @property
    def complete(self) -> bool:
        """Whether every turn was shown at least once."""
        return len(self.seen) >= self.total_turns


@dataclass
class ToolContext:
    """What a tool may use during one run. Built by the runtime, one per run."""

    conversation: Conversation
    coverage: ReadCoverage
    http: HttpTransport | None = None
    secrets: Mapping[str, str] = field(default_factory=dict)
    effects: RunEffects | None = None
    """Where write effects are recorded; None: writes are made without keys or records."""
    procedure_step: tuple[str, int] | None = None
    """(procedure name, step order) while a procedure step runs; the runtime keeps it current."""
    results: ResultsReader | None = None
    """Read-only ledger queries for standalone (`input: results`) analyzers; None elsewhere."""


class Tool(Protocol):
    """A tool the model can call."""

    @property
    def name(self) -> str:
        """The tool's name, as the model calls it."""
        ...

    @property
    def kind(self) -> ToolKind:
        """Where the call is recorded in the trace."""
        ...

    def definition(self) -> JSON:
        """The Messages API tool definition: name, description, input_schema (and strict)."""
        ...

    async def call(self, arguments: JSON, context: ToolContext) -> ToolOutcome:
        """Run the tool. Problems the model can fix come back as `is_error` outcomes."""
        ...
