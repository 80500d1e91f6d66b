"""The fake Messages API's shortcuts give exactly what the plain computations give.

The fake computes a request's prompt blocks and canonical JSON once (`serialisation_memo`), the
simulated analyst caches each text's sentences, a stream without pauses or faults goes out in one
write, and the server can run on httptools/uvloop. None of that may change a byte or a number:
these tests compare each shortcut with the straightforward computation it replaces.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import math
import random
import re
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzers.fakes import (
    FakeBlock,
    FakeMessagesAPI,
    FakeReply,
    RedactedThinking,
    Text,
    Thinking,
    ToolCall,
    count_input_tokens,
    serve_fake_messages_api,
    simulated_analyst,
)
from analyzers.fakes import simulated as simulated_module
from analyzers.fakes.cache import (
    PromptBlock,
    PromptCache,
    canonical_json,
    prompt_blocks,
    serialisation_memo,
)
from analyzers.fakes.replies import Disconnect, MidStreamError
from analyzers.fakes.sse import encode_event, stream_events

JSON = dict[str, Any]
MODEL = "claude-sonnet-4-6"
USER: JSON = {"role": "user", "content": "Analyse the conversation."}

# -- the plain computations, as the fake did them before the shortcuts -------------------------


def plain_canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def plain_prompt_blocks(body: JSON) -> list[PromptBlock]:
    """Every block serialised on its own, twice (for the key, then for the tokens)."""
    ttls = {"5m": 300.0, "1h": 3600.0}

    def ttl_of(marker: object) -> float | None:
        if not isinstance(marker, dict):
            return None
        return ttls.get(str(marker.get("ttl", "5m")), 300.0)

    def tagged() -> list[tuple[str, JSON]]:
        found: list[tuple[str, JSON]] = []
        found += [("tool", tool) for tool in body.get("tools") or [] if isinstance(tool, dict)]
        system = body.get("system")
        if isinstance(system, str):
            found.append(("system", {"type": "text", "text": system}))
        elif isinstance(system, list):
            found += [("system", block) for block in system if isinstance(block, dict)]
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                blocks = [{"type": "text", "text": content}]
            elif isinstance(content, list):
                blocks = [block for block in content if isinstance(block, dict)]
            else:
                blocks = []
            for index, block in enumerate(blocks):
                found.append((f"{message.get('role')}{'' if index else '+'}", block))
        return found

    blocks: list[PromptBlock] = []
    digest = hashlib.sha256(b"prefix")
    cumulative = 0
    in_messages = False
    for tag, block in tagged():
        if not in_messages and tag not in ("tool", "system"):
            in_messages = True
            digest.update(plain_canonical_json([body.get("thinking"), body.get("tool_choice")]))
        bare = {key: value for key, value in block.items() if key != "cache_control"}
        digest.update(plain_canonical_json([tag, bare]))
        tokens = math.ceil(len(plain_canonical_json(bare)) / 4)
        cumulative += tokens
        ttl = ttl_of(block.get("cache_control"))
        blocks.append(PromptBlock(digest.copy().hexdigest(), tokens, cumulative, ttl))
    automatic = ttl_of(body.get("cache_control"))
    if automatic is not None and blocks and blocks[-1].ttl is None:
        last = blocks[-1]
        blocks[-1] = PromptBlock(last.key, last.tokens, last.cumulative, automatic)
    return blocks


# -- random request bodies ---------------------------------------------------------------------

# Non-ASCII, escapes, line breaks and sentence ends: what changes byte counts and sentences.
TEXT = st.text(alphabet=st.sampled_from('ab Z9.!?\n\t"\\<>…[]:é漢😀\u2028'), max_size=60)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)
CACHE_CONTROL = st.one_of(
    st.just({"type": "ephemeral"}),
    st.just({"type": "ephemeral", "ttl": "1h"}),
    st.just({"type": "ephemeral", "ttl": "5m"}),
)


@st.composite
def blocks(draw: st.DrawFn, kinds: tuple[str, ...] = ("text", "tool_result", "image")) -> JSON:
    block: JSON = {"type": draw(st.sampled_from(kinds))}
    block.update(draw(st.dictionaries(st.sampled_from(["text", "content", "id", "zeta"]), VALUES)))
    if draw(st.booleans()):
        block["cache_control"] = draw(CACHE_CONTROL)
    return block


@st.composite
def bodies(draw: st.DrawFn) -> JSON:
    body: JSON = {"model": MODEL, "max_tokens": draw(st.integers(1, 64000))}
    if draw(st.booleans()):
        body["tools"] = draw(st.lists(blocks(("custom",)), max_size=3))
    system = draw(st.one_of(st.none(), TEXT, st.lists(blocks(("text",)), max_size=3)))
    if system is not None:
        body["system"] = system
    messages = []
    for index in range(draw(st.integers(1, 4))):
        role = "user" if index % 2 == 0 else "assistant"
        content = draw(st.one_of(TEXT, st.lists(blocks(), max_size=3)))
        messages.append({"role": role, "content": content})
    body["messages"] = messages
    for key in ("thinking", "tool_choice", "metadata", "cache_control"):
        if draw(st.booleans()):
            body[key] = draw(CACHE_CONTROL if key == "cache_control" else VALUES)
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_the_memo_gives_the_blocks_tokens_and_canonical_json_of_the_plain_computation(
    body: JSON,
) -> None:
    expected_blocks = plain_prompt_blocks(body)
    expected_json = plain_canonical_json(body)

    assert prompt_blocks(body) == expected_blocks  # outside the memo too
    assert canonical_json(body) == expected_json
    with serialisation_memo(body):
        assert canonical_json(body) == expected_json  # asked for before the blocks
    with serialisation_memo(body):
        first = prompt_blocks(body)
        assert first == expected_blocks
        assert prompt_blocks(body) is first  # computed once
        assert canonical_json(body) == expected_json  # composed from the blocks' texts
        assert count_input_tokens(body) == max(1, sum(b.tokens for b in expected_blocks))
        assert canonical_json(body["messages"]) == plain_canonical_json(body["messages"])


@settings(max_examples=100, deadline=None)
@given(bodies())
def test_cache_plans_inside_the_memo_equal_plans_outside_it(body: JSON) -> None:
    def plans(memoised: bool) -> list[JSON]:
        cache = PromptCache(clock=lambda: 100.0, min_tokens=lambda model: 1)
        found = []
        for _ in range(2):  # the second request reads what the first one wrote
            if memoised:
                with serialisation_memo(body):
                    plan = cache.plan(body)
            else:
                plan = cache.plan(body)
            cache.commit(plan)
            found.append({**plan.usage(), "writes": plan.writes, "refresh": plan.refresh})
        return found

    assert plans(memoised=True) == plans(memoised=False)


def test_the_memo_ends_with_its_block_and_covers_only_its_body() -> None:
    body: JSON = {"model": MODEL, "messages": [{"role": "user", "content": "Hello there."}]}
    other: JSON = {"model": MODEL, "messages": [{"role": "user", "content": "Bye now."}]}
    with serialisation_memo(body):
        assert canonical_json(other) == plain_canonical_json(other)
        assert prompt_blocks(other) == plain_prompt_blocks(other)
        assert canonical_json(body) == plain_canonical_json(body)
    body["messages"][0]["content"] = "Changed after the request."
    assert canonical_json(body) == plain_canonical_json(body)
    assert prompt_blocks(body) == plain_prompt_blocks(body)


# -- the simulated analyst's sentences -------------------------------------------------------


def plain_sentences(texts: list[str]) -> list[str]:
    """The analyst's sentences, found in all texts joined by line breaks."""
    joined = "\n".join(texts)
    fragments = (m.group(0).strip() for m in re.finditer(r"[^.!?\n]{12,}[.!?]?", joined))
    cut = [
        simulated_module._SPEAKER.sub("", fragment, count=1).strip()
        for fragment in fragments
        if not fragment.startswith(("<", "…"))
    ]
    return [sentence for sentence in cut if len(sentence) >= 8]


SENTENCE_TEXT = st.text(
    alphabet=st.sampled_from("abc XY 12:03 .!?\n[e4]<…user agent_x"), max_size=200
)


@settings(max_examples=300, deadline=None)
@given(st.lists(SENTENCE_TEXT, max_size=5))
def test_sentences_found_text_by_text_are_those_of_the_joined_texts(texts: list[str]) -> None:
    body: JSON = {
        "system": [{"type": "text", "text": text} for text in texts[:1]],
        "messages": [{"role": "user", "content": text} for text in texts[1:]],
    }
    context = simulated_module._Context(body, random.Random(0))  # noqa: S311

    assert context.sentences == plain_sentences(texts)


def test_the_simulated_analyst_answers_the_same_inside_and_outside_the_memo() -> None:
    transcript = "\n".join(f"[{turn}] user: Turn {turn} asks for a refund." for turn in range(30))
    body: JSON = {
        "model": MODEL,
        "max_tokens": 4096,
        "system": [{"type": "text", "text": "You analyse conversations.", "cache_control": {}}],
        "tools": [
            {
                "name": "record_outcome",
                "input_schema": {
                    "type": "object",
                    "properties": {"resolved": {"type": "boolean"}, "note": {"type": "string"}},
                },
            }
        ],
        "messages": [{"role": "user", "content": [{"type": "text", "text": transcript}]}],
    }
    simulated_module._sentences.cache_clear()
    plain = simulated_analyst(body)
    with serialisation_memo(body):
        prompt_blocks(body)
        assert simulated_analyst(body) == plain  # sentences cached, canonical JSON composed


# -- one write per stream ------------------------------------------------------------------


def plain_stream(api: FakeMessagesAPI, reply: FakeReply, body: JSON) -> bytes:
    """The stream as per-event writes would send it (no pause, no fault)."""
    with serialisation_memo(body):
        plan = api.cache.plan(body)
        built = api._build(reply, body, api._profile(MODEL), plan, "req_x")
    return b"".join(encode_event(name, data) for name, data in stream_events(built))


async def chunks_of(api: FakeMessagesAPI, reply: FakeReply, body: JSON) -> list[bytes]:
    with serialisation_memo(body):
        plan = api.cache.plan(body)
        built = api._build(reply, body, api._profile(MODEL), plan, "req_x")
    return [chunk async for chunk in api._stream(reply, built, plan)]


REPLIES = [
    FakeReply([Thinking("Short thought."), ToolCall("record_outcome", {"resolved": False})]),
    FakeReply([RedactedThinking(), Text("A long answer. " * 40)]),
    FakeReply([Text(f"part {index}") for index in range(5)]),  # pings between blocks
    FakeReply([ToolCall("record_outcome", raw_json='{"resolved": tr')], stop_reason="max_tokens"),
]


@pytest.mark.parametrize("reply", REPLIES)
def test_a_stream_without_pauses_or_faults_is_one_write_of_the_per_event_bytes(
    reply: FakeReply,
) -> None:
    body: JSON = {"model": MODEL, "max_tokens": 4096, "messages": [USER]}
    api = FakeMessagesAPI()

    chunks = asyncio.run(chunks_of(api, reply, body))

    assert len(chunks) == 1
    assert chunks[0] == plain_stream(FakeMessagesAPI(), reply, body)
    assert chunks[0].count(b"event: ping\n") >= 1
    assert api.active_streams == 0
    assert api.max_active_streams == 1


@pytest.mark.parametrize(
    "reply",
    [
        FakeReply([Text("slow")], event_latency=0.001),
        FakeReply([Text("cut")], fault=Disconnect(after_events=2)),
        FakeReply([Text("fails")], fault=MidStreamError(after_events=2)),
    ],
)
def test_streams_with_pauses_or_faults_still_go_event_by_event(reply: FakeReply) -> None:
    body: JSON = {"model": MODEL, "max_tokens": 4096, "messages": [USER]}

    chunks = asyncio.run(chunks_of(FakeMessagesAPI(), reply, body))

    assert len(chunks) > 2
    assert all(chunk.count(b"\n\n") == 1 for chunk in chunks)
    if reply.fault is None:
        assert b"".join(chunks) == plain_stream(FakeMessagesAPI(), reply, body)
    else:
        assert plain_stream(FakeMessagesAPI(), reply, body).startswith(b"".join(chunks[:2]))


def test_the_one_write_stream_and_a_paced_stream_carry_the_same_bytes_over_http() -> None:
    body: JSON = {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Analyse the conversation."}],
        "stream": True,
    }
    content: list[FakeBlock] = [
        Thinking("Short thought."),
        ToolCall("record_outcome", {"resolved": True}),
    ]
    raw = []
    for event_latency in (0.0, 0.001):
        api = FakeMessagesAPI()
        api.script([FakeReply(content, event_latency=event_latency)])
        with serve_fake_messages_api(api) as base_url:
            raw.append(post(base_url, body))

    assert raw[0] == raw[1]
    assert raw[0][0] == 200


# -- httptools and uvloop ------------------------------------------------------------------


def post(base_url: str, body: JSON, key: str = "k") -> tuple[int, str | None, str | None, bytes]:
    url = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    try:
        headers = {"content-type": "application/json", "x-api-key": key}
        connection.request("POST", "/v1/messages", body=json.dumps(body), headers=headers)
        response = connection.getresponse()
        return (
            response.status,
            response.getheader("request-id"),
            response.getheader("content-type"),
            response.read(),
        )
    finally:
        connection.close()


def test_httptools_and_uvloop_serve_the_same_answers_as_the_defaults() -> None:
    streamed: JSON = {
        "model": MODEL,
        "max_tokens": 4096,
        "system": [{"type": "text", "text": "Long system text. " * 400, "cache_control": {}}],
        "messages": [{"role": "user", "content": "Analyse the conversation."}],
        "stream": True,
    }
    whole = {key: value for key, value in streamed.items() if key != "stream"}
    refused = {**whole, "temperature": 0.5}

    def answers(**options: Any) -> list[tuple[int, str | None, str | None, bytes]]:
        api = FakeMessagesAPI(responder=lambda body: FakeReply([Text("Fine.")]))
        with serve_fake_messages_api(api, **options) as base_url:
            found = [post(base_url, body) for body in (streamed, streamed, whole, refused)]
            found.append(post(base_url, whole, key=""))
        return found

    default = answers()
    compiled = answers(http="httptools", loop="uvloop")

    assert compiled == default
    assert [status for status, *_ in default] == [200, 200, 200, 400, 401]
    assert b'"cache_read_input_tokens":0' not in default[1][3]  # the second read the cache
