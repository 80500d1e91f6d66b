"""A scripted model for unit tests: the run loop's fake, shipped beside the interface.

    model = ScriptedModel([
        reply(thinking("Start at the end."), tool_call("get_turns", {"first": 50, "last": 60})),
        reply(tool_call("record_follow_up", {"value": {...}, "evidence_turns": [57]})),
        reply(text("Recorded one follow-up.")),
    ])
    result = await analyzers.run(spec, conversation, model=model)
    assert model.requests[1].messages[-1]["content"][0]["type"] == "tool_result"

Each scripted item is a `ModelTurn`, a function of the request returning one, or an exception
to raise. The model records every request, so tests can check exactly what was sent.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from analyzers.model.protocol import JSON, ModelRequest, ModelTurn, StopReason
from analyzers.runtime.prompt import estimate_tokens
from schemas.usage import Usage

Script = ModelTurn | Callable[[ModelRequest], ModelTurn] | BaseException

_ids = itertools.count(1)


def thinking(text: str, signature: str = "sig-test") -> JSON:
    """A thinking block, as the API returns it."""
    return {"type": "thinking", "thinking": text, "signature": signature}


def text(value: str) -> JSON:
    """A text block."""
    return {"type": "text", "text": value}


def tool_call(name: str, arguments: dict[str, Any], tool_use_id: str | None = None) -> JSON:
    """A tool_use block."""
    return {
        "type": "tool_use",
        "id": tool_use_id or f"toolu_{next(_ids):04d}",
        "name": name,
        "input": arguments,
    }


def reply(
    *blocks: JSON,
    stop_reason: StopReason | None = None,
    usage: Usage | None = None,
    stop_details: JSON | None = None,
) -> ModelTurn:
    """One assistant turn; the stop reason follows from the blocks unless given."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    return ModelTurn(
        content=list(blocks),
        stop_reason=stop_reason,
        usage=usage or Usage(input_tokens=100, output_tokens=20),
        model="scripted",
        message_id=f"msg_{next(_ids):04d}",
        stop_details=stop_details,
    )


@dataclass
class ScriptedModel:
    """A `ModelClient` that answers from a script and records what it was asked."""

    script: Sequence[Script]
    requests: list[ModelRequest] = field(default_factory=list)
    token_counts: list[ModelRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._remaining = list(self.script)

    async def complete(self, request: ModelRequest) -> ModelTurn:
        """The next scripted turn; running out of script is a test bug, said plainly."""
        self.requests.append(request)
        if not self._remaining:
            raise AssertionError(
                f"the scripted model ran out of turns after {len(self.requests) - 1} call(s)"
            )
        item = self._remaining.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item(request) if callable(item) else item

    async def count_tokens(self, request: ModelRequest) -> int:
        """A deterministic estimate, like the fake server's."""
        self.token_counts.append(request)
        return sum(estimate_tokens(str(block)) for block in [*request.system, *request.messages])

    @property
    def exhausted(self) -> bool:
        """Whether every scripted turn was used."""
        return not self._remaining
