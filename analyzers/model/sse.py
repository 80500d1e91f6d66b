"""A Messages API stream read from its raw bytes: SSE decoding and message accumulation.

The SDK turns every streamed event into pydantic models (event, delta, snapshot) and re-parses
the partial tool-input JSON after every delta; at hundreds of concurrent streams that costs more
CPU than the HTTP exchange itself. This module reads the same bytes into plain dicts and strings
and builds the message once, at the end, with the SDK's accumulation rules (`accumulate_event` in
`anthropic.lib.streaming._messages`) so the result is what `messages.stream(...)` would give:

- content blocks are appended in `content_block_start` order and deltas address them by index;
- text, thinking (with its last `signature_delta`), citations and tool-input JSON accumulate
  into their block; a delta of a kind the block does not take is ignored, as are unknown events;
- `message_delta` overwrites the stop reason, stop sequence and stop details, and the usage
  counts it carries (cumulative totals);
- a block comes back as the SDK's `to_dict(exclude_none=True)` of it would: the keys the API sent,
  without top-level nulls, ready to be echoed byte for byte in the next request.

Pure code, no SDK and no I/O: the adapter (`analyzers.model.anthropic`) feeds it bytes. Garbage
is a `MalformedStream` naming the event and the problem, never a traceback from deep inside;
model text never appears in these errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jiter

from schemas.usage import Usage

JSON = dict[str, Any]

MAX_LINE_BYTES = 16 * 1024 * 1024
"""An SSE line longer than this is refused: the API's events are small, and a stream that never
sends a newline must not grow a buffer without bound."""

# Blocks whose tool input arrives as `input_json_delta`s (the SDK's TRACKS_TOOL_INPUT).
_TOOL_INPUT_BLOCKS = frozenset({"tool_use", "server_tool_use"})


class MalformedStream(ValueError):
    """The stream's bytes are not a Messages API event stream (bad SSE, JSON or event order)."""


class MalformedToolInput(ValueError):
    """The model's tool-input JSON does not parse, even as a prefix of a JSON value."""


class StreamErrorEvent(Exception):
    """An `event: error` inside a 200 stream. `body` is its parsed JSON (or its text)."""

    def __init__(self, message: str, body: object) -> None:
        super().__init__(message)
        self.body = body


class SSEDecoder:
    """Server-sent events from byte chunks cut anywhere: `(event name, data)` per event.

    Lines end with LF, CRLF or CR (a CR at the end of a chunk may be the first half of a CRLF).
    Comment lines and the `id` and `retry` fields are ignored; several `data` lines join with LF;
    an event is dispatched at a blank line, and a trailing event without one is dropped, as the
    SSE specification (and the SDK's decoder) does.
    """

    __slots__ = ("_buffer", "_cr_pending", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._cr_pending = False
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        """The events completed by `chunk`."""
        if self._cr_pending and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CRLF whose CR ended the previous chunk
        self._cr_pending = False
        if b"\r" in chunk:
            self._cr_pending = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk if self._buffer else chunk
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > MAX_LINE_BYTES:
            self._buffer = b""
            raise MalformedStream(f"an SSE line longer than {MAX_LINE_BYTES} bytes")
        events: list[tuple[str | None, str]] = []
        for raw in lines:
            if not raw:
                if self._event is not None or self._data:
                    events.append((self._event, "\n".join(self._data)))
                    self._event = None
                    self._data = []
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise MalformedStream(f"an SSE line is not UTF-8: {error.reason}") from None
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value or None
            # comments (empty name), `id`, `retry` and unknown fields: ignored
        return events


def _object(value: object, what: str) -> JSON:
    if not isinstance(value, dict):
        raise MalformedStream(f"{what} is not a JSON object")
    return value


def _count(usage: JSON, key: str) -> int:
    value = usage.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedStream(f"usage.{key} is not an integer")
    return value


@dataclass
class StreamedMessage:
    """A message accumulated from its stream, in plain structures."""

    id: str
    model: str
    content: list[JSON]
    stop_reason: str | None
    stop_details: JSON | None
    usage: Usage


@dataclass
class MessageAccumulator:
    """Builds the message from decoded events, as the SDK's accumulator would."""

    started: bool = False
    _message: JSON = field(default_factory=dict)
    _usage: JSON = field(default_factory=dict)
    _blocks: list[JSON] = field(default_factory=list)
    # Per block index: the text pieces (text or thinking) and the tool-input JSON pieces.
    _pieces: dict[int, list[str]] = field(default_factory=dict)
    _json: dict[int, list[str]] = field(default_factory=dict)

    def add(self, event: object) -> None:
        """Apply one event's parsed `data`."""
        data = _object(event, "an event's data")
        kind = data.get("type")
        if not self.started:
            if kind != "message_start":
                raise MalformedStream(f"event {kind!r} arrived before message_start")
            self._start(_object(data.get("message"), "message_start.message"))
            return
        if kind == "content_block_delta":
            self._delta(data)
        elif kind == "content_block_start":
            block = dict(_object(data.get("content_block"), "content_block_start.content_block"))
            index = len(self._blocks)
            self._blocks.append(block)
            text_key = _TEXT_KEYS.get(block.get("type"))
            if text_key is not None:
                initial = block.get(text_key)
                self._pieces[index] = [initial] if isinstance(initial, str) and initial else []
        elif kind == "message_delta":
            self._message_delta(data)
        # message_start again, content_block_stop, message_stop, unknown events: nothing to do

    def _start(self, message: JSON) -> None:
        self.started = True
        self._message = message
        self._usage = dict(_object(message.get("usage") or {}, "message_start.message.usage"))
        for block in message.get("content") or []:
            self._blocks.append(dict(_object(block, "message_start content block")))

    def _block(self, data: JSON) -> tuple[int, JSON]:
        index = data.get("index")
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not (0 <= index < len(self._blocks))
        ):
            raise MalformedStream(f"content_block_delta for a block that did not start: {index!r}")
        return index, self._blocks[index]

    def _delta(self, data: JSON) -> None:
        index, block = self._block(data)
        delta = _object(data.get("delta"), "content_block_delta.delta")
        kind = delta.get("type")
        block_type = block.get("type")
        if kind in ("text_delta", "thinking_delta"):
            key = "text" if kind == "text_delta" else "thinking"
            if block_type == key:
                piece = delta.get(key)
                if not isinstance(piece, str):
                    raise MalformedStream(f"{kind}.{key} is not a string")
                self._pieces.setdefault(index, []).append(piece)
        elif kind == "input_json_delta":
            if block_type in _TOOL_INPUT_BLOCKS:
                piece = delta.get("partial_json")
                if not isinstance(piece, str):
                    raise MalformedStream("input_json_delta.partial_json is not a string")
                self._json.setdefault(index, []).append(piece)
        elif kind == "signature_delta":
            if block_type == "thinking":
                block["signature"] = delta.get("signature")
        elif kind == "citations_delta" and block_type == "text":
            citations = block.get("citations") or []
            block["citations"] = [*citations, delta.get("citation")]

    def _message_delta(self, data: JSON) -> None:
        delta = _object(data.get("delta"), "message_delta.delta")
        self._message["stop_reason"] = delta.get("stop_reason")
        self._message["stop_sequence"] = delta.get("stop_sequence")
        self._message["stop_details"] = delta.get("stop_details")
        usage = _object(data.get("usage") or {}, "message_delta.usage")
        self._usage["output_tokens"] = usage.get("output_tokens")
        for key, value in usage.items():
            # Cumulative totals overwrite; a count left out (or null) keeps its earlier value.
            if key != "output_tokens" and value is not None and key in _DELTA_USAGE_KEYS:
                self._usage[key] = value

    def message(self) -> StreamedMessage:
        """The whole message. Raises `MalformedToolInput` for tool JSON that cannot parse."""
        if not self.started:
            raise MalformedStream("the stream ended before message_start")
        content = [self._finished(index, block) for index, block in enumerate(self._blocks)]
        message = self._message
        stop_details = message.get("stop_details")
        if stop_details is not None:
            stop_details = _object(stop_details, "stop_details")
        stop_reason = message.get("stop_reason")
        if stop_reason is not None and not isinstance(stop_reason, str):
            raise MalformedStream("stop_reason is not a string")
        return StreamedMessage(
            id=str(message.get("id") or ""),
            model=str(message.get("model") or ""),
            content=content,
            stop_reason=stop_reason,
            stop_details=stop_details,
            usage=self._typed_usage(),
        )

    def _finished(self, index: int, block: JSON) -> JSON:
        text_key = _TEXT_KEYS.get(block.get("type"))
        pieces = self._pieces.get(index)
        if text_key is not None and (pieces or text_key in block):
            block[text_key] = "".join(pieces or ())
        raw = self._json.get(index)
        if raw:
            joined = "".join(raw)
            if joined:
                try:
                    # The SDK's own parser and mode: a tool input cut off by max_tokens comes
                    # back as the complete part of it.
                    block["input"] = jiter.from_json(joined.encode(), partial_mode=True)
                except ValueError as error:
                    raise MalformedToolInput(
                        f"tool input of block {index} is not JSON: {error}"
                    ) from None
        echoed = {key: value for key, value in block.items() if value is not None}
        citations = echoed.get("citations")
        if isinstance(citations, list):
            echoed["citations"] = [
                {k: v for k, v in c.items() if v is not None} if isinstance(c, dict) else c
                for c in citations
            ]
        return echoed

    def _typed_usage(self) -> Usage:
        usage = self._usage
        cache_creation = usage.get("cache_creation")
        one_hour = (
            _count(_object(cache_creation, "usage.cache_creation"), "ephemeral_1h_input_tokens")
            if cache_creation is not None
            else 0
        )
        return Usage(
            input_tokens=_count(usage, "input_tokens"),
            output_tokens=_count(usage, "output_tokens"),
            cache_creation_input_tokens=_count(usage, "cache_creation_input_tokens"),
            cache_read_input_tokens=_count(usage, "cache_read_input_tokens"),
            # Priced higher than 5-minute writes: keep the split the API reports.
            cache_creation_1h_input_tokens=one_hour,
        )


_TEXT_KEYS: dict[object, str] = {"text": "text", "thinking": "thinking"}
# The usage counts a message_delta may update besides output_tokens (as the SDK does).
_DELTA_USAGE_KEYS = frozenset(
    {
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "server_tool_use",
        "output_tokens_details",
    }
)


def error_event(data: str) -> StreamErrorEvent:
    """The exception for an `event: error`, with the message the SDK would give it."""
    try:
        body: object = json.loads(data)
        message = f"{body}"
    except ValueError:
        body = data
        message = data or "Error code: 200"
    return StreamErrorEvent(message, body)
