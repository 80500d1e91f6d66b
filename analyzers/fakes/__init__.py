"""Fakes shipped beside the interfaces posthoc owns.

`FakeMessagesAPI` is a faithful fake of the Anthropic Messages API over real HTTP, for driving the
real `anthropic` SDK in tests, benchmarks and `posthoc demo` (with `simulated_analyst` as its
responder). No module here imports `anthropic`.
"""

from __future__ import annotations

from analyzers.fakes.cache import count_input_tokens, estimate_tokens
from analyzers.fakes.messages_api import (
    FakeMessagesAPI,
    RecordedRequest,
    serve_fake_messages_api,
)
from analyzers.fakes.replies import (
    Disconnect,
    FakeBlock,
    FakeReply,
    HttpError,
    MidStreamError,
    RedactedThinking,
    Responder,
    Scripted,
    Stall,
    Text,
    Thinking,
    ToolCall,
)
from analyzers.fakes.simulated import simulated_analyst

__all__ = [
    "Disconnect",
    "FakeBlock",
    "FakeMessagesAPI",
    "FakeReply",
    "HttpError",
    "MidStreamError",
    "RecordedRequest",
    "RedactedThinking",
    "Responder",
    "Scripted",
    "Stall",
    "Text",
    "Thinking",
    "ToolCall",
    "count_input_tokens",
    "estimate_tokens",
    "serve_fake_messages_api",
    "simulated_analyst",
]
