"""What a test tells the fake Messages API to answer: content blocks, a stop reason, and faults.

A script is a list of `FakeReply` (a model turn, possibly with a fault inside its stream) and
`HttpError` (the request fails before any stream starts). Everything here is plain data; the
server (`messages_api`) and the SSE renderer (`sse`) give it meaning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from analyzers.model.protocol import JSON, StopReason

__all__ = ["JSON", "StopReason"]


@dataclass(frozen=True)
class Thinking:
    """A `thinking` block. The server signs `text` unless `signature` is given (use a wrong one
    to simulate a block from another model)."""

    text: str
    signature: str | None = None


@dataclass(frozen=True)
class RedactedThinking:
    """A `redacted_thinking` block; `data` is generated (and signed) by the server when None."""

    data: str | None = None


@dataclass(frozen=True)
class Text:
    """A `text` block."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """A `tool_use` block. `raw_json` streams that exact text as `input_json_delta`s instead of
    `input` (malformed or truncated JSON); `id` is generated when None."""

    name: str
    input: JSON | None = None
    id: str | None = None
    raw_json: str | None = None


FakeBlock = Thinking | RedactedThinking | Text | ToolCall


@dataclass(frozen=True)
class HttpError:
    """Fail the request with an HTTP error before any stream starts (429, 529, 500, ...).

    `retry_after` (seconds) and `retry_after_ms` become the `retry-after` / `retry-after-ms`
    headers. `latency` is slept before answering.
    """

    status: int = 529
    error_type: str = "overloaded_error"
    message: str = "Overloaded"
    retry_after: float | None = None
    retry_after_ms: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    latency: float = 0.0

    @classmethod
    def rate_limited(cls, retry_after: float | None = None) -> HttpError:
        message = "Number of request tokens has exceeded your rate limit."
        return cls(429, "rate_limit_error", message, retry_after=retry_after)

    @classmethod
    def overloaded(cls, retry_after: float | None = None) -> HttpError:
        return cls(529, "overloaded_error", "Overloaded", retry_after=retry_after)

    @classmethod
    def internal(cls) -> HttpError:
        return cls(500, "api_error", "Internal server error")


@dataclass(frozen=True)
class MidStreamError:
    """After `after_events` SSE events (pings not counted), send `event: error` and end the
    stream. The SDK raises `APIStatusError` with `status_code == 200`."""

    after_events: int = 3
    error_type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass(frozen=True)
class Stall:
    """After `after_events` SSE events, send nothing but pings for `seconds`, then carry on."""

    seconds: float
    after_events: int = 1
    ping_interval: float = 0.05


@dataclass(frozen=True)
class Disconnect:
    """After `after_events` SSE events, end the response without `message_delta` and
    `message_stop`, as when a proxy cuts a stream. (Not streaming: a 500.)"""

    after_events: int = 3


@dataclass(frozen=True)
class FakeReply:
    """One assistant turn as the fake streams it.

    `stop_reason` defaults to `tool_use` when the content has a tool call, else `end_turn`.
    `output_tokens` defaults to an estimate from the content (`max_tokens` of the request when
    the stop reason is `max_tokens`). `stop_details` defaults to an uncategorised refusal when the
    stop reason is `refusal`. `event_latency` is slept before every event, `latency` once
    before `message_start` (time to first token).
    """

    content: Sequence[FakeBlock] = (Text("Done."),)
    stop_reason: StopReason | None = None
    stop_details: JSON | None = None
    stop_sequence: str | None = None
    output_tokens: int | None = None
    latency: float = 0.0
    event_latency: float = 0.0
    fault: MidStreamError | Stall | Disconnect | None = None

    def resolved_stop_reason(self) -> StopReason:
        if self.stop_reason is not None:
            return self.stop_reason
        if any(isinstance(block, ToolCall) for block in self.content):
            return "tool_use"
        return "end_turn"


Scripted = FakeReply | HttpError
"""One entry of a script: a turn, or a request that fails with an HTTP error."""

Responder = Callable[[JSON], Scripted]
"""A function from the request body to what the fake answers."""
