"""The raw SSE stream reader (`analyzers.model.sse`) and the adapter's request bytes.

The reader must build, from the stream's bytes, exactly the message the SDK's own accumulator
builds from the same events (content as `to_param()` gives it, stop reason and details, usage),
however the bytes are cut into chunks; garbage must end in `MalformedStream` /
`MalformedToolInput`, never another exception or a hang. The adapter must send the bytes and
headers `client.messages.stream(...)` sends for the same request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any, cast

import anthropic
import httpx2
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzers.errors import TransientModelError
from analyzers.fakes import FakeReply, RedactedThinking, Text, Thinking, ToolCall
from analyzers.fakes.sse import Signer, build_message, encode_event, stream_events
from analyzers.model import sse
from analyzers.model.anthropic import AnthropicModel, _request_params
from analyzers.model.protocol import ModelRequest
from analyzers.model.sse import (
    MalformedStream,
    MalformedToolInput,
    MessageAccumulator,
    SSEDecoder,
    StreamedMessage,
)

JSON = dict[str, Any]
SIGNER = Signer(b"test-key")
USAGE: JSON = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 3000,
    "cache_read_input_tokens": 40,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
}
FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def wire(reply: FakeReply, *, line_end: bytes = b"\n") -> tuple[bytes, list[JSON]]:
    """The SSE bytes the fake sends for `reply`, and the events' data in order (pings too)."""
    built = build_message(
        reply,
        request={"model": "claude-sonnet-4-6", "max_tokens": 256},
        message_id="msg_test",
        tool_id_seed="seed",
        signer=SIGNER,
        display_omitted=False,
        usage=dict(USAGE),
    )
    events = list(stream_events(built))
    raw = b"".join(encode_event(name, data) for name, data in events)
    if line_end != b"\n":
        raw = raw.replace(b"\n", line_end)
    return raw, [data for _, data in events]


def read(chunks: Sequence[bytes]) -> StreamedMessage:
    """What the reader makes of these chunks (events as the adapter dispatches them)."""
    decoder = SSEDecoder()
    accumulator = MessageAccumulator()
    for chunk in chunks:
        for name, data in decoder.feed(chunk):
            if name is None or name == "ping" or not data:
                continue
            try:
                parsed = json.loads(data)
            except ValueError as error:
                raise MalformedStream(str(error)) from None
            accumulator.add(parsed)
    return accumulator.message()


def sdk_view(events: list[JSON]) -> JSON:
    """The message the SDK's accumulator builds from the same events, as the old adapter saw it:
    content through `to_param()` and `to_dict(exclude_none=True)`."""
    snapshot: Any = None
    buffers: dict[int, bytes] = {}
    for data in events:
        if data["type"] == "ping":
            continue
        snapshot = accumulate_event(
            event=cast(Any, data), current_snapshot=snapshot, json_bufs=buffers
        )
    content = [
        block.to_dict(mode="json", exclude_none=True) for block in snapshot.to_param()["content"]
    ]
    usage = snapshot.usage
    return {
        "id": snapshot.id,
        "model": snapshot.model,
        "content": content,
        "stop_reason": snapshot.stop_reason,
        "stop_details": (
            snapshot.stop_details.to_dict(mode="json") if snapshot.stop_details else None
        ),
        "usage": (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_creation_input_tokens or 0,
            usage.cache_read_input_tokens or 0,
            usage.cache_creation.ephemeral_1h_input_tokens if usage.cache_creation else 0,
        ),
    }


def our_view(message: StreamedMessage) -> JSON:
    usage = message.usage
    return {
        "id": message.id,
        "model": message.model,
        "content": message.content,
        "stop_reason": message.stop_reason,
        "stop_details": message.stop_details,
        "usage": (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_creation_input_tokens,
            usage.cache_read_input_tokens,
            usage.cache_creation_1h_input_tokens,
        ),
    }


def cut(raw: bytes, points: list[int]) -> list[bytes]:
    """`raw` cut at the given offsets (taken modulo its length)."""
    offsets = sorted({point % (len(raw) + 1) for point in points} | {0, len(raw)})
    return [raw[a:b] for a, b in itertools.pairwise(offsets)]


# -- valid streams ------------------------------------------------------------------------------

texts = st.text(max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
blocks = st.one_of(
    st.builds(Thinking, texts),
    st.builds(RedactedThinking),
    st.builds(Text, texts),
    st.builds(
        ToolCall,
        st.sampled_from(["record_outcome", "get_turns"]),
        st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    ),
    st.builds(
        ToolCall,
        st.just("record_outcome"),
        raw_json=st.sampled_from(
            ['{"resolved": false, "evidence_turns": [1, 2', '{"a": "unterminated', "", "{}"]
        ),
    ),
)
replies = st.builds(
    FakeReply,
    st.lists(blocks, max_size=5),
    stop_reason=st.sampled_from([None, "end_turn", "max_tokens", "refusal", "pause_turn"]),
)


@FUZZ
@given(reply=replies, points=st.lists(st.integers(min_value=0), max_size=12))
def test_any_chunking_of_a_valid_stream_gives_what_the_sdk_accumulates(
    reply: FakeReply, points: list[int]
) -> None:
    raw, events = wire(reply)

    whole = read([raw])
    chunked = read(cut(raw, points))

    assert our_view(whole) == sdk_view(events)
    assert our_view(chunked) == our_view(whole)


def test_a_stream_fed_one_byte_at_a_time_reads_the_same() -> None:
    reply = FakeReply(
        [Thinking("Plan."), RedactedThinking(), Text("Done."), ToolCall("t", {"a": [1, None]})]
    )
    raw, events = wire(reply, line_end=b"\r\n")

    bytewise = read([raw[i : i + 1] for i in range(len(raw))])

    assert our_view(bytewise) == sdk_view(events)


@FUZZ
@given(
    reply=replies,
    line_end=st.sampled_from([b"\r\n", b"\r"]),
    points=st.lists(st.integers(min_value=0), max_size=12),
)
def test_crlf_and_cr_line_ends_cut_anywhere_read_the_same(
    reply: FakeReply, line_end: bytes, points: list[int]
) -> None:
    plain, _ = wire(reply)
    raw, _ = wire(reply, line_end=line_end)

    assert our_view(read(cut(raw, points))) == our_view(read([plain]))


def test_a_turn_keeps_signatures_redacted_data_and_tool_input() -> None:
    reply = FakeReply(
        [
            Thinking("Check turn 3."),
            RedactedThinking(),
            Text("Recording."),
            ToolCall("record_outcome", {"resolved": True, "note": None}),
        ]
    )
    raw, _ = wire(reply)

    message = read([raw])

    thinking, redacted, text, tool = message.content
    assert thinking == {
        "type": "thinking",
        "thinking": "Check turn 3.",
        "signature": SIGNER.sign_thinking("Check turn 3."),
    }
    assert set(redacted) == {"type", "data"}
    assert text == {"type": "text", "text": "Recording."}
    assert tool["input"] == {"resolved": True, "note": None}  # nulls inside inputs are kept
    assert message.stop_reason == "tool_use"
    assert message.usage.cache_creation_1h_input_tokens == 2000


def test_comments_ids_retries_and_multi_line_data_follow_the_sse_rules() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(
        b': a comment\nid: 7\nretry: 100\nevent: x\ndata: {"a":\ndata: 1}\n\n'
        b"event: y\n\ndata:no-space\n\nevent: tail\ndata: 1"
    )
    assert events == [("x", '{"a":\n1}'), ("y", ""), (None, "no-space")]
    assert decoder.feed(b"") == []  # the trailing event never got its blank line


# -- garbage -------------------------------------------------------------------------------------

CLEAR_ERRORS = (MalformedStream, MalformedToolInput)


def attempt(work: Callable[[], object]) -> Exception | None:
    """None when `work` succeeds, its clear error when it fails; any other exception escapes."""
    try:
        work()
    except CLEAR_ERRORS as error:
        return error
    return None


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_random_bytes_end_in_a_clear_error_or_a_message(chunks: list[bytes]) -> None:
    outcome = attempt(lambda: read(chunks))
    assert outcome is None or str(outcome)


@FUZZ
@given(
    reply=replies,
    position=st.integers(min_value=0),
    garbage=st.binary(min_size=1, max_size=40),
)
def test_a_valid_stream_with_garbage_spliced_in_is_read_or_refused_clearly(
    reply: FakeReply, position: int, garbage: bytes
) -> None:
    raw, _ = wire(reply)
    at = position % (len(raw) + 1)
    outcome = attempt(lambda: read([raw[:at] + garbage + raw[at:]]))
    assert outcome is None or str(outcome)


@pytest.mark.parametrize(
    ("events", "problem"),
    [
        ([{"type": "content_block_start", "index": 0}], "before message_start"),
        ([{"type": "message_start", "message": []}], "message_start.message is not a JSON"),
        ([[1, 2]], "an event's data is not a JSON object"),
        (
            [
                {"type": "message_start", "message": {"id": "m", "usage": {}}},
                {"type": "content_block_delta", "index": 3, "delta": {"type": "text_delta"}},
            ],
            "a block that did not start: 3",
        ),
        (
            [{"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": "x"}}}],
            "usage.input_tokens is not an integer",
        ),
        ([], "ended before message_start"),
    ],
)
def test_wrong_events_name_the_problem(events: list[object], problem: str) -> None:
    def feed_all() -> None:
        accumulator = MessageAccumulator()
        for event in events:
            accumulator.add(event)
        accumulator.message()

    with pytest.raises(MalformedStream, match=problem):
        feed_all()


def test_a_line_without_end_is_refused_not_buffered_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "MAX_LINE_BYTES", 4096)
    decoder = SSEDecoder()
    for _ in range(4):
        assert decoder.feed(b"x" * 1024) == []
    with pytest.raises(MalformedStream, match="longer than 4096 bytes"):
        decoder.feed(b"x")


def test_malformed_tool_json_names_the_block_not_the_text() -> None:
    raw, _ = wire(FakeReply([Text("hi"), ToolCall("t", raw_json='{"secret": tru}')]))
    with pytest.raises(MalformedToolInput, match="tool input of block 1") as failed:
        read([raw])
    assert "secret" not in str(failed.value)


# -- the request -----------------------------------------------------------------------------------


def capture(send: Callable[[anthropic.AsyncAnthropic], Any]) -> httpx2.Request:
    """The request `send(client)` makes, answered with an empty end_turn stream."""
    seen: list[httpx2.Request] = []
    raw, _ = wire(FakeReply([]))

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    async def main() -> None:
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
        client = anthropic.AsyncAnthropic(
            api_key="k", base_url="http://api.test", max_retries=0, http_client=http
        )
        try:
            await send(client)
        finally:
            await client.close()

    asyncio.run(main())
    (request,) = seen
    return request


async def via_sdk_stream(client: anthropic.AsyncAnthropic, request: ModelRequest) -> None:
    params = _request_params(request)
    async with client.messages.stream(max_tokens=request.max_tokens, **params) as stream:
        await stream.get_final_message()


async def via_adapter(client: anthropic.AsyncAnthropic, request: ModelRequest) -> None:
    await AnthropicModel(client).complete(request)


block_texts = st.text(
    st.characters(blacklist_categories=["Cs"]), max_size=30
)  # any unicode, no lone surrogates
requests = st.builds(
    ModelRequest,
    model=st.sampled_from(["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-5-5", "x-new"]),
    max_tokens=st.integers(min_value=1, max_value=64_000),
    system=st.lists(
        st.builds(lambda text: {"type": "text", "text": text}, block_texts), max_size=2
    ),
    messages=st.lists(
        st.builds(lambda text: {"role": "user", "content": text}, block_texts),
        min_size=1,
        max_size=2,
    ),
    tools=st.lists(
        st.builds(
            lambda name, schema: {"name": name, "input_schema": schema},
            block_texts,
            st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        ),
        max_size=2,
    ),
    thinking=st.sampled_from(["adaptive", "enabled", "disabled"]),
    effort=st.sampled_from([None, "low", "high", "max"]),
)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(request=requests)
def test_the_adapter_sends_the_bytes_and_headers_of_messages_stream(request: ModelRequest) -> None:
    ours = capture(lambda client: via_adapter(client, request))
    sdks = capture(lambda client: via_sdk_stream(client, request))

    assert ours.content == sdks.content
    assert ours.method == sdks.method
    assert ours.url == sdks.url
    assert list(ours.headers.items()) == list(sdks.headers.items())
    assert json.loads(ours.content)["stream"] is True


def capture_second(
    send: Callable[[anthropic.AsyncAnthropic], Any],
    client_class: type[anthropic.AsyncAnthropic] = anthropic.AsyncAnthropic,
) -> httpx2.Request:
    """The second request `send(client)` makes on one client, after a first response that
    set a cookie (the HTTP client sends it back from then on)."""
    seen: list[httpx2.Request] = []
    raw, _ = wire(FakeReply([]))

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        headers = {"content-type": "text/event-stream", "set-cookie": f"visit={len(seen)}"}
        return httpx2.Response(200, content=raw, headers=headers)

    async def main() -> None:
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
        client = client_class(
            api_key="k", base_url="http://api.test", max_retries=0, http_client=http
        )
        try:
            await send(client)
            await send(client)
        finally:
            await client.close()

    asyncio.run(main())
    _, second = seen
    return second


def one_model() -> Callable[[anthropic.AsyncAnthropic], Any]:
    """`complete(PLAIN)` on one adapter per client, built on its first call."""
    models: dict[int, AnthropicModel] = {}

    def send(client: anthropic.AsyncAnthropic) -> Any:
        model = models.setdefault(id(client), AnthropicModel(client))
        return model.complete(PLAIN)

    return send


def test_later_requests_on_a_client_still_send_what_messages_stream_sends() -> None:
    ours = capture_second(one_model())
    sdks = capture_second(lambda client: via_sdk_stream(client, PLAIN))

    assert ours.content == sdks.content
    assert ours.url == sdks.url
    assert list(ours.headers.items()) == list(sdks.headers.items())
    assert ours.headers["cookie"] == "visit=1"


class SignedClient(anthropic.AsyncAnthropic):
    """A client whose request hook adds a header per request (as a signing client would)."""

    signed = 0

    async def _prepare_request(self, request: httpx2.Request) -> None:
        SignedClient.signed += 1
        request.headers["x-signature"] = str(SignedClient.signed)


def test_a_client_that_changes_each_request_is_not_prepared_once() -> None:
    second = capture_second(one_model(), SignedClient)

    assert second.headers["x-signature"] == str(SignedClient.signed)
    assert SignedClient.signed >= 2


# -- a connection that drops in the middle of an event ------------------------------------------


def served(responses: list[httpx2.Response]) -> tuple[list[str], list[httpx2.Request]]:
    """The text of each turn the adapter returns for REQUEST when the server answers with
    `responses` in turn (one call, up to three attempts), and the requests it received."""
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return responses[len(seen) - 1]

    async def no_wait(_: float) -> None:
        return None

    async def main() -> list[str]:
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
        client = anthropic.AsyncAnthropic(
            api_key="k", base_url="http://api.test", max_retries=0, http_client=http
        )
        model = AnthropicModel(client, sleep=no_wait)
        try:
            return [(await model.complete(PLAIN)).text()]
        finally:
            await model.aclose()

    return asyncio.run(main()), seen


PLAIN = ModelRequest(
    model="claude-sonnet-4-6",
    max_tokens=256,
    system=[],
    messages=[{"role": "user", "content": "hi"}],
)


def streamed(raw: bytes, *, then: Exception | None = None) -> httpx2.Response:
    async def body() -> Any:
        yield raw
        if then is not None:
            raise then

    return httpx2.Response(200, content=body(), headers={"content-type": "text/event-stream"})


@pytest.mark.parametrize(
    "drop", ["mid_line_clean_end", "mid_line_reset", "before_message_start_reset"]
)
def test_a_stream_cut_in_the_middle_of_an_event_is_retried(drop: str) -> None:
    raw, _ = wire(FakeReply([Text("whole answer")]))
    middle = raw.index(b"content_block_delta") + 25  # inside an event's data line
    cut_at = 10 if drop.startswith("before") else middle
    reset = httpx2.ReadError("connection reset") if drop.endswith("reset") else None

    texts, seen = served([streamed(raw[:cut_at], then=reset), streamed(raw)])

    assert texts == ["whole answer"]
    assert len(seen) == 2
    assert seen[0].content == seen[1].content  # the retry sends the same bytes


def test_garbage_in_every_attempt_is_a_transient_error_naming_the_problem() -> None:
    garbage = b"event: message_start\ndata: {not json\n\n"

    with pytest.raises(TransientModelError, match="malformed stream: message_start event data"):
        served([streamed(garbage) for _ in range(3)])


def test_no_idempotency_key_is_generated_for_a_header_the_api_does_not_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK makes a uuid4 key per request, but sends it only under an idempotency header,
    which the Anthropic client has none of: the adapter spares it (same bytes on the wire)."""

    def no_uuid() -> None:
        raise AssertionError("uuid4 called")

    monkeypatch.setattr("anthropic._base_client.uuid.uuid4", no_uuid)

    request = capture(lambda client: via_adapter(client, PLAIN))

    assert not any("idempotency" in name.lower() for name in request.headers)
    with pytest.raises(AssertionError, match="uuid4 called"):
        capture(lambda client: via_sdk_stream(client, PLAIN))
