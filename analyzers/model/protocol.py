"""The one interface between the agent loop and a language model.

The run loop (`analyzers.runtime.session`) speaks only to `ModelClient`. The Anthropic adapter
(`analyzers.model.anthropic`) is the only module that imports the `anthropic` SDK; the scripted
model in `analyzers.testing` implements the same protocol for unit tests.

Messages, system blocks and tool definitions are plain JSON-shaped dicts in the Messages API's
own format, so the adapter has nothing to translate and the assistant content it returns can be
echoed back byte for byte (thinking blocks keep their signatures).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from schemas.usage import Usage

JSON = dict[str, Any]

ThinkingMode = Literal["adaptive", "enabled", "disabled"]
Effort = Literal["low", "medium", "high", "xhigh", "max"]

# Every stop reason the Messages API documents; the run loop handles each one explicitly.
StopReason = Literal[
    "end_turn",
    "tool_use",
    "max_tokens",
    "stop_sequence",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
]


@dataclass(frozen=True)
class ModelRequest:
    """One streamed call to the model: everything the Messages API needs, nothing else.

    `thinking` is the requested mode; the adapter turns it into the wire shape the model accepts
    (adaptive where budget thinking is refused). `deadline` is an absolute `time.monotonic()`
    value: the call must give up by then. `idle_timeout` is how long the stream may go without an
    event (at least that, at most 1.5 times that) before the call is abandoned and counted as a
    transient failure.
    """

    model: str
    max_tokens: int
    system: list[JSON]
    messages: list[JSON]
    tools: list[JSON] = field(default_factory=list)
    thinking: ThinkingMode = "adaptive"
    effort: Effort | None = None
    budget_tokens: int | None = None
    deadline: float | None = None
    idle_timeout: float = 300.0


@dataclass(frozen=True)
class ModelTurn:
    """What the model answered in one call.

    `content` is the assistant content exactly as received, as JSON dicts ready to be sent back
    in the next request's assistant message.
    """

    content: list[JSON]
    stop_reason: StopReason
    usage: Usage
    model: str
    message_id: str = ""
    stop_details: JSON | None = None
    duration_s: float = 0.0

    def tool_uses(self) -> list[JSON]:
        """The tool_use blocks of this turn, in the order the model emitted them."""
        return [block for block in self.content if block.get("type") == "tool_use"]

    def text(self) -> str:
        """The visible text of this turn (thinking excluded)."""
        return "".join(
            block.get("text", "") for block in self.content if block.get("type") == "text"
        )


class ModelClient(Protocol):
    """A language model the run loop can call. Implementations own retries of a single call."""

    async def complete(self, request: ModelRequest) -> ModelTurn:
        """Stream one assistant turn and return it whole.

        Raises `analyzers.errors.TransientModelError` for failures worth retrying later (rate
        limits, overload, timeouts, dropped streams) and `analyzers.errors.PermanentModelError`
        for requests the model will never accept.
        """
        ...

    async def count_tokens(self, request: ModelRequest) -> int:
        """Count the prompt tokens `request` would use, without running the model."""
        ...
