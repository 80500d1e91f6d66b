"""Turning a `FakeReply` into the Messages API's wire shapes.

`build_message` gives the complete message (the non-streaming JSON body, and the source of truth
for the stream); `stream_events` gives the SSE events that the SDK's accumulator rebuilds into
the same message: `message_start` (usage with input and cache counts), per block
`content_block_start` / deltas / `content_block_stop` (thinking: `thinking_delta`s then one
`signature_delta`; redacted thinking: no deltas; text: `text_delta`s; tool use: several
`input_json_delta`s), occasional `ping`s, `message_delta` (stop reason, stop details, cumulative
usage) and `message_stop`. Shapes follow reference section 7.4 and the SDK's own fixtures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from analyzers.fakes.cache import estimate_tokens
from analyzers.fakes.replies import (
    JSON,
    FakeReply,
    RedactedThinking,
    Text,
    Thinking,
    ToolCall,
)

PING: tuple[str, JSON] = ("ping", {"type": "ping"})
_PING_EVERY = 6  # a ping after every this many events, besides the one after message_start


class Signer:
    """Signs thinking blocks and redacted-thinking payloads, and checks echoed ones."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, purpose: bytes, payload: bytes) -> bytes:
        return hmac.new(self._key, purpose + b"\0" + payload, hashlib.sha256).digest()

    def sign_thinking(self, text: str) -> str:
        return base64.b64encode(b"\x12\x08" + self._mac(b"thinking", text.encode())).decode()

    def thinking_is_valid(self, text: object, signature: object) -> bool:
        if not isinstance(text, str) or not isinstance(signature, str):
            return False
        return hmac.compare_digest(signature, self.sign_thinking(text))

    def redacted_data(self, seed: bytes) -> str:
        nonce = hashlib.sha256(seed).digest()[:24]
        return base64.b64encode(nonce + self._mac(b"redacted", nonce)[:16]).decode()

    def redacted_is_valid(self, data: object) -> bool:
        if not isinstance(data, str):
            return False
        try:
            raw = base64.b64decode(data.encode(), validate=True)
        except ValueError:
            return False
        nonce, tag = raw[:-16], raw[-16:]
        return len(nonce) > 0 and hmac.compare_digest(tag, self._mac(b"redacted", nonce)[:16])


@dataclass(frozen=True)
class BuiltMessage:
    """The final message plus, per tool_use block index, the exact JSON text to stream."""

    message: JSON
    tool_json: dict[int, str]


def _best_effort_input(raw: str) -> JSON:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def build_message(
    reply: FakeReply,
    *,
    request: JSON,
    message_id: str,
    tool_id_seed: str,
    signer: Signer,
    display_omitted: bool,
    usage: JSON,
) -> BuiltMessage:
    """The complete assistant message for `reply`. `usage` carries the input and cache counts;
    output tokens are added here."""
    content: list[JSON] = []
    tool_json: dict[int, str] = {}
    estimated = 0
    for index, block in enumerate(reply.content):
        if isinstance(block, Thinking):
            text = "" if display_omitted else block.text
            signature = (
                block.signature if block.signature is not None else signer.sign_thinking(text)
            )
            content.append({"type": "thinking", "thinking": text, "signature": signature})
            estimated += estimate_tokens(block.text)
        elif isinstance(block, RedactedThinking):
            data = block.data or signer.redacted_data(f"{tool_id_seed}:{index}".encode())
            content.append({"type": "redacted_thinking", "data": data})
            estimated += 16
        elif isinstance(block, Text):
            content.append({"type": "text", "text": block.text})
            estimated += estimate_tokens(block.text)
        elif isinstance(block, ToolCall):
            raw = block.raw_json if block.raw_json is not None else json.dumps(block.input or {})
            digest = hashlib.sha256(f"{tool_id_seed}:{index}".encode()).hexdigest()[:24]
            tool_id = block.id or f"toolu_{digest}"
            tool_input = _best_effort_input(raw) if block.raw_json is not None else block.input
            content.append(
                {"type": "tool_use", "id": tool_id, "name": block.name, "input": tool_input or {}}
            )
            tool_json[len(content) - 1] = raw
            estimated += estimate_tokens(raw) + 8
    stop_reason = reply.resolved_stop_reason()
    output_tokens = reply.output_tokens
    if output_tokens is None:
        max_tokens = int(request.get("max_tokens") or 1)
        output_tokens = max_tokens if stop_reason == "max_tokens" else max(1, estimated)
    stop_details = reply.stop_details
    if stop_details is None and stop_reason == "refusal":
        stop_details = {"type": "refusal", "category": None, "explanation": None}
    stop_sequence = reply.stop_sequence
    if stop_sequence is None and stop_reason == "stop_sequence":
        sequences = request.get("stop_sequences") or ["\n\nHuman:"]
        stop_sequence = str(sequences[0])
    message: JSON = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": request.get("model"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "stop_details": stop_details,
        "usage": {**usage, "output_tokens": output_tokens, "service_tier": "standard"},
    }
    return BuiltMessage(message, tool_json)


def _chunks(text: str, parts: int = 3) -> list[str]:
    """`text` in up to `parts` consecutive non-empty pieces."""
    if not text:
        return []
    size = max(1, math.ceil(len(text) / parts))
    return [text[start : start + size] for start in range(0, len(text), size)]


def _block_events(index: int, block: JSON, tool_json: str | None) -> Iterator[tuple[str, JSON]]:
    kind = block["type"]
    start: JSON
    deltas: list[JSON] = []
    if kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": c} for c in _chunks(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "text":
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": chunk} for chunk in _chunks(block["text"])]
    elif kind == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        pieces = ["", *_chunks(tool_json or "", parts=4)]
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
    else:  # redacted_thinking and anything else arrives whole, without deltas
        start = block
    yield (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": start},
    )
    for delta in deltas:
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": index}


def stream_events(built: BuiltMessage) -> Iterator[tuple[str, JSON]]:
    """The SSE events of `built`, pings included, in wire order."""
    message = built.message
    usage: JSON = message["usage"]
    start_message = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "stop_details": None,
        "usage": {**usage, "output_tokens": 1},
    }
    yield "message_start", {"type": "message_start", "message": start_message}
    yield PING
    count = 0
    for index, block in enumerate(message["content"]):
        for event in _block_events(index, block, built.tool_json.get(index)):
            yield event
            count += 1
            if count % _PING_EVERY == 0:
                yield PING
    delta_usage: dict[str, Any] = {
        key: usage[key]
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    }
    delta_usage["output_tokens"] = usage["output_tokens"]
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message["stop_reason"],
                "stop_sequence": message["stop_sequence"],
                "stop_details": message["stop_details"],
            },
            "usage": delta_usage,
        },
    )
    yield "message_stop", {"type": "message_stop"}


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps(..., separators=(",", ":"))


def encode_event(name: str, data: JSON) -> bytes:
    """One SSE event on the wire: an `event:` line, a `data:` line, a blank line."""
    return f"event: {name}\ndata: {_COMPACT.encode(data)}\n\n".encode()
