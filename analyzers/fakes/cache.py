"""Token counting and prompt caching as the fake Messages API simulates them.

Tokens are a deterministic approximation: a quarter of the UTF-8 bytes of a block's canonical
JSON, rounded up. `count_tokens` and `usage` use the same function, so they always agree.

Caching follows the documented rules (reference section 4): the prompt is the sequence of
blocks tools → system → messages; a block carrying `cache_control` is a breakpoint that caches the
exact prefix up to and including it (the marker itself is not part of the prefix); a breakpoint
reads the longest unexpired entry at its own position or up to 20 blocks before it; prefixes
shorter than the model's minimum are never cached; entries live 5 minutes (or 1 hour) from the
start of the request that wrote or last read them; caches are per model. A change of thinking
configuration or `tool_choice` invalidates the messages part only. An entry becomes readable when
the response that writes it starts streaming, so concurrent identical requests all pay the write.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

LOOKBACK_BLOCKS = 20
MAX_BREAKPOINTS = 4
_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_canonical_text = _CANONICAL.encode
"""json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False), without
building an encoder per call."""


def canonical_json(value: object) -> bytes:
    """The one serialisation every count and cache key is computed from."""
    memo = _MEMO.get()
    if memo is not None and value is memo.body:
        return memo.body_json()
    return _canonical_text(value).encode()


def estimate_tokens(value: object) -> int:
    """ceil(bytes of canonical JSON / 4); plain strings count their UTF-8 bytes."""
    data = value.encode() if isinstance(value, str) else canonical_json(value)
    return math.ceil(len(data) / 4)


@dataclass(frozen=True)
class PromptBlock:
    """One block of the prompt in cache order, with the running totals a breakpoint needs."""

    key: str  # hash of the whole prefix up to and including this block
    tokens: int
    cumulative: int
    ttl: float | None  # seconds, when this block carries cache_control


def _ttl_of(cache_control: object) -> float | None:
    if not isinstance(cache_control, dict):
        return None
    return _TTL_SECONDS.get(str(cache_control.get("ttl", "5m")), _TTL_SECONDS["5m"])


def _message_blocks(message: JSON) -> Iterator[JSON]:
    content = message.get("content")
    if isinstance(content, str):
        yield {"type": "text", "text": content}
    elif isinstance(content, list):
        yield from (block for block in content if isinstance(block, dict))


def _system_blocks(body: JSON) -> Iterator[JSON]:
    system = body.get("system")
    if isinstance(system, str):
        yield {"type": "text", "text": system}
    elif isinstance(system, list):
        yield from (block for block in system if isinstance(block, dict))


def _tagged_blocks(body: JSON) -> Iterator[tuple[str, JSON]]:
    """(section tag, block) in cache order. The tag keeps a user block and an identical
    assistant block apart, and marks where each message starts."""
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            yield "tool", tool
    for block in _system_blocks(body):
        yield "system", block
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        for index, block in enumerate(_message_blocks(message)):
            yield f"{message.get('role')}{'' if index else '+'}", block


_Pieces = dict[int, tuple[object, str]]
"""id(block) -> (block, its canonical JSON text)."""


def prompt_blocks(body: JSON) -> list[PromptBlock]:
    """The request's prompt as cacheable blocks. A top-level `cache_control` (automatic
    caching) puts a breakpoint on the last block.

    Inside `serialisation_memo(body)` the blocks are computed once and shared by every caller
    (validation, the cache plan, token counting): treat the list as read-only."""
    memo = _MEMO.get()
    if memo is not None and body is memo.body:
        if memo.blocks is None:
            memo.blocks = _prompt_blocks(body, memo.pieces)
        return memo.blocks
    return _prompt_blocks(body, None)


def _prompt_blocks(body: JSON, pieces: _Pieces | None) -> list[PromptBlock]:
    """`prompt_blocks`; with `pieces`, also keep the canonical JSON text of every block, by
    `id`, for `_body_text`."""
    blocks: list[PromptBlock] = []
    digest = hashlib.sha256(b"prefix")
    cumulative = 0
    in_messages = False
    for tag, block in _tagged_blocks(body):
        if not in_messages and tag not in ("tool", "system"):
            in_messages = True
            # Thinking and tool_choice settings sit between system and messages: changing
            # them invalidates only the messages part of the cache.
            digest.update(canonical_json([body.get("thinking"), body.get("tool_choice")]))
        bare_text, block_text = _block_texts(block)
        # canonical_json([tag, bare]) without serialising the bare block twice: a list's
        # canonical JSON is its items' joined by "," in brackets; the tokens are the bare block's.
        prefix = "[" + _canonical_text(tag) + ","
        tagged = (prefix + bare_text + "]").encode()
        digest.update(tagged)
        tokens = math.ceil((len(tagged) - len(prefix.encode()) - 1) / 4)
        if pieces is not None and block_text is not None:
            pieces[id(block)] = (block, block_text)
        cumulative += tokens
        blocks.append(
            PromptBlock(
                digest.copy().hexdigest(), tokens, cumulative, _ttl_of(block.get("cache_control"))
            )
        )
    automatic = _ttl_of(body.get("cache_control"))
    if automatic is not None and blocks and blocks[-1].ttl is None:
        last = blocks[-1]
        blocks[-1] = PromptBlock(last.key, last.tokens, last.cumulative, automatic)
    return blocks


def _block_texts(block: JSON) -> tuple[str, str | None]:
    """The canonical JSON text of `block` without its `cache_control`, and of the whole block
    (None when not computed), each value serialised once."""
    if "cache_control" not in block:
        text = _canonical_text(block)
        return text, text
    if not _all_str_keys(block):
        return _canonical_text({k: v for k, v in block.items() if k != "cache_control"}), None
    items = sorted((key, _canonical_text(value)) for key, value in block.items())
    whole = _joined_items(items)
    return _joined_items([item for item in items if item[0] != "cache_control"]), whole


def _joined_items(items: list[tuple[str, str]]) -> str:
    """A dict's canonical JSON text from its (key, value text) pairs sorted by key."""
    return "{" + ",".join(_canonical_text(key) + ":" + text for key, text in items) + "}"


# -- one request's serialisations, computed once ------------------------------------------------


@dataclass(eq=False)
class _Memo:
    """What `prompt_blocks` and `canonical_json` computed for `body` during one request."""

    body: JSON
    blocks: list[PromptBlock] | None = None
    pieces: _Pieces = field(default_factory=dict)
    canonical: bytes | None = None

    def body_json(self) -> bytes:
        if self.canonical is None:
            self.canonical = _body_text(self.body, self.pieces).encode()
        return self.canonical


_MEMO: ContextVar[_Memo | None] = ContextVar("fake_messages_api_memo", default=None)


@contextmanager
def serialisation_memo(body: object) -> Iterator[None]:
    """While handling one request: compute `prompt_blocks(body)` and `canonical_json(body)`
    once, however many checks ask for them (the results are those of the uncached functions).
    `body` must not be changed inside the block."""
    token = _MEMO.set(_Memo(body) if isinstance(body, dict) else None)
    try:
        yield
    finally:
        _MEMO.reset(token)


def _all_str_keys(value: dict[Any, Any]) -> bool:
    return all(type(key) is str for key in value)


def _list_text(items: list[Any], item_text: Callable[[Any], str]) -> str:
    return "[" + ",".join(item_text(item) for item in items) + "]"


def _dict_text(value: dict[str, Any], value_text: Callable[[str, Any], str]) -> str:
    # What json.dumps(sort_keys=True) does: items sorted by key, "key":value joined by ",".
    return _joined_items([(key, value_text(key, item)) for key, item in sorted(value.items())])


def _body_text(body: JSON, pieces: _Pieces) -> str:
    """`_canonical_text(body)`, reusing the canonical text of the prompt blocks in `pieces`
    (by `id`; computed by `_prompt_blocks` from this same body) instead of serialising the
    transcript again."""
    if not pieces or not _all_str_keys(body):
        return _canonical_text(body)

    def piece(item: object) -> str:
        known = pieces.get(id(item))
        return known[1] if known is not None and known[0] is item else _canonical_text(item)

    def message_value(key: str, item: object) -> str:
        if key == "content" and isinstance(item, list):
            return _list_text(item, piece)
        return _canonical_text(item)

    def message(item: object) -> str:
        if isinstance(item, dict) and _all_str_keys(item):
            return _dict_text(item, message_value)
        return _canonical_text(item)

    def body_value(key: str, item: object) -> str:
        if isinstance(item, list):
            if key == "messages":
                return _list_text(item, message)
            if key in ("tools", "system"):
                return _list_text(item, piece)
        return _canonical_text(item)

    return _dict_text(body, body_value)


def count_input_tokens(body: JSON) -> int:
    """Every prompt token of the request, cached or not (what `count_tokens` answers)."""
    return max(1, sum(block.tokens for block in prompt_blocks(body)))


def count_breakpoints(body: JSON) -> int:
    """How many `cache_control` markers the request carries (the top-level one included)."""
    count = sum(1 for _, block in _tagged_blocks(body) if block.get("cache_control"))
    return count + (1 if body.get("cache_control") else 0)


@dataclass(frozen=True)
class CachePlan:
    """The usage a request will report, and the cache entries it will write or refresh when its
    response starts."""

    model: str
    input_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    ephemeral_5m_input_tokens: int
    ephemeral_1h_input_tokens: int
    writes: tuple[tuple[str, float], ...]  # (prefix key, ttl)
    refresh: tuple[str, float] | None
    started_at: float

    def usage(self) -> JSON:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.ephemeral_5m_input_tokens,
                "ephemeral_1h_input_tokens": self.ephemeral_1h_input_tokens,
            },
        }


class PromptCache:
    """Cache entries by (model, prefix hash), with expiry on an injectable clock."""

    def __init__(self, *, clock: Callable[[], float], min_tokens: Callable[[str], int]) -> None:
        self._clock = clock
        self._min_tokens = min_tokens
        self._expiry: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (expires, ttl)
        self._lock = threading.Lock()

    def plan(self, body: JSON) -> CachePlan:
        model = str(body.get("model"))
        blocks = prompt_blocks(body)
        now = self._clock()
        breakpoints = [index for index, block in enumerate(blocks) if block.ttl is not None]
        read_at = -1
        refresh: tuple[str, float] | None = None
        with self._lock:
            for breakpoint in breakpoints:
                for index in range(breakpoint, max(-1, breakpoint - LOOKBACK_BLOCKS - 1), -1):
                    entry = self._expiry.get((model, blocks[index].key))
                    if entry is not None and entry[0] > now:
                        if index > read_at:
                            read_at, refresh = index, (blocks[index].key, entry[1])
                        break
        read = blocks[read_at].cumulative if read_at >= 0 else 0
        minimum = self._min_tokens(model)
        written = [
            index
            for index in breakpoints
            if index > read_at and blocks[index].cumulative >= minimum
        ]
        by_ttl = {_TTL_SECONDS["5m"]: 0, _TTL_SECONDS["1h"]: 0}
        start = read
        for index in written:
            ttl = blocks[index].ttl or _TTL_SECONDS["5m"]
            by_ttl[ttl] = by_ttl.get(ttl, 0) + blocks[index].cumulative - start
            start = blocks[index].cumulative
        creation = start - read
        total = blocks[-1].cumulative if blocks else 0
        return CachePlan(
            model=model,
            input_tokens=total - read - creation,
            cache_read_input_tokens=read,
            cache_creation_input_tokens=creation,
            ephemeral_5m_input_tokens=by_ttl[_TTL_SECONDS["5m"]],
            ephemeral_1h_input_tokens=by_ttl[_TTL_SECONDS["1h"]],
            writes=tuple((blocks[index].key, blocks[index].ttl or 300.0) for index in written),
            refresh=refresh,
            started_at=now,
        )

    def commit(self, plan: CachePlan) -> None:
        """Make the plan's entries readable (its response has started)."""
        with self._lock:
            for key, ttl in plan.writes:
                self._expiry[(plan.model, key)] = (plan.started_at + ttl, ttl)
            if plan.refresh is not None:
                key, ttl = plan.refresh
                self._expiry[(plan.model, key)] = (plan.started_at + ttl, ttl)

    def clear(self) -> None:
        with self._lock:
            self._expiry.clear()
