"""The fake Messages API, driven by the real `anthropic` SDK over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import anthropic
import jsonschema
import pytest
from anthropic.types import Message

from analyzers.fakes import (
    Disconnect,
    FakeMessagesAPI,
    FakeReply,
    HttpError,
    MidStreamError,
    RedactedThinking,
    Stall,
    Text,
    Thinking,
    ToolCall,
    count_input_tokens,
    serve_fake_messages_api,
    simulated_analyst,
)

T = TypeVar("T")
JSON = dict[str, Any]

MODEL = "claude-sonnet-4-6"  # shows thinking text by default; budget thinking deprecated there
BUDGET_MODEL = "claude-haiku-4-5"  # budget thinking is its only mode
USER: JSON = {"role": "user", "content": "Analyse the conversation."}
RECORD_TOOL: JSON = {
    "name": "record_outcome",
    "description": "Record whether the customer's issue was resolved.",
    "input_schema": {
        "type": "object",
        "properties": {
            "resolved": {"type": "boolean"},
            "evidence_turns": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        },
        "required": ["resolved", "evidence_turns"],
        "additionalProperties": False,
    },
}
LONG_TRANSCRIPT = "\n".join(
    f"[{turn}] {'user' if turn % 2 else 'agent'}: I would like to talk about order {turn} "
    "and the refund that was promised last week."
    for turn in range(80)
)  # about 1,700 tokens: above the 1,024-token cache minimum


@dataclass
class Served:
    api: FakeMessagesAPI
    base_url: str


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One server for the module (starting and stopping uvicorn costs ~0.2 s)."""
    api = FakeMessagesAPI()
    with serve_fake_messages_api(api) as base_url:
        yield Served(api, base_url)


@pytest.fixture
def fake(served: Served) -> Served:
    served.api.reset()
    return served


def with_client(base_url: str, scenario: Callable[[anthropic.AsyncAnthropic], Awaitable[T]]) -> T:
    """Run `scenario` with a real SDK client pointed at the fake, closing it afterwards."""

    async def main() -> T:
        client = anthropic.AsyncAnthropic(api_key="test", base_url=base_url, max_retries=0)
        try:
            return await scenario(client)
        finally:
            await client.close()

    return asyncio.run(main())


async def stream_message(client: anthropic.AsyncAnthropic, **params: Any) -> Message:
    params.setdefault("model", MODEL)
    params.setdefault("max_tokens", 4096)
    params.setdefault("messages", [USER])
    async with client.messages.stream(**params) as stream:
        return await stream.get_final_message()


def post_raw(base_url: str, path: str, body: JSON, headers: dict[str, str]) -> tuple[int, bytes]:
    """A request without the SDK, to see the bytes on the wire."""
    url = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    try:
        connection.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"content-type": "application/json", **headers},
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def sse_events(raw: bytes) -> list[tuple[str, JSON]]:
    events = []
    for chunk in raw.decode().split("\n\n"):
        if not chunk.strip():
            continue
        lines = chunk.split("\n")
        assert lines[0].startswith("event: "), chunk
        assert lines[1].startswith("data: "), chunk
        events.append((lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])))
    return events


def tool_results(message: Message, content: str = "ok") -> JSON:
    return {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": block.id, "content": content}
            for block in message.content
            if block.type == "tool_use"
        ],
    }


# -- streaming shapes -----------------------------------------------------------------------


def test_a_thinking_text_and_tool_use_turn_streams_into_the_sdk_intact(fake: Served) -> None:
    fake.api.script(
        [
            FakeReply(
                [
                    Thinking("The customer asked for a refund; turn 2 confirms it."),
                    Text("Recording the outcome."),
                    ToolCall("record_outcome", {"resolved": True, "evidence_turns": [0, 2]}),
                ]
            )
        ]
    )

    async def scenario(client: anthropic.AsyncAnthropic) -> tuple[Message, list[str]]:
        params: JSON = {"model": MODEL, "max_tokens": 4096, "messages": [USER]}
        params.update(tools=[RECORD_TOOL], thinking={"type": "adaptive"})
        async with client.messages.stream(**params) as stream:
            kinds: list[str] = [event.type async for event in stream]
            return await stream.get_final_message(), kinds

    message, kinds = with_client(fake.base_url, scenario)

    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    thinking, text, tool_use = message.content
    assert thinking.type == "thinking"
    assert text.type == "text"
    assert tool_use.type == "tool_use"
    assert thinking.thinking == "The customer asked for a refund; turn 2 confirms it."
    assert thinking.signature  # replaced once by the single signature_delta
    assert text.text == "Recording the outcome."
    assert tool_use.name == "record_outcome"
    assert tool_use.input == {"resolved": True, "evidence_turns": [0, 2]}
    assert tool_use.id.startswith("toolu_")
    assert message.stop_reason == "tool_use"
    assert {"thinking", "signature", "text", "input_json", "message_stop"} <= set(kinds)
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


def test_the_wire_format_is_event_and_data_lines_in_the_documented_order(fake: Served) -> None:
    fake.api.script(
        [FakeReply([Thinking("Short thought."), ToolCall("record_outcome", {"resolved": False})])]
    )
    body = {"model": MODEL, "max_tokens": 4096, "messages": [USER], "stream": True}

    status, raw = post_raw(fake.base_url, "/v1/messages", body, {"authorization": "Bearer k"})

    assert status == 200
    events = sse_events(raw)
    names = [name for name, _ in events]
    assert all(data["type"] == name for name, data in events)
    assert names[0] == "message_start"
    assert names[1] == "ping"
    assert names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert {"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"} <= set(
        start["usage"]
    )
    deltas = [data for name, data in events if name == "content_block_delta"]
    thinking_deltas = [d["delta"] for d in deltas if d["index"] == 0]
    assert [d["type"] for d in thinking_deltas][-1] == "signature_delta"
    assert sum(d["type"] == "signature_delta" for d in thinking_deltas) == 1
    json_parts = [d["delta"]["partial_json"] for d in deltas if d["index"] == 1]
    assert len(json_parts) >= 3
    assert json.loads("".join(json_parts)) == {"resolved": False}
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "tool_use"
    assert final["usage"]["output_tokens"] > 1


def test_a_non_streaming_request_gets_the_whole_message_as_json(fake: Served) -> None:
    fake.api.script([FakeReply([Text("Plain answer.")])])

    params: JSON = {"model": MODEL, "max_tokens": 1024, "messages": [USER]}

    message = with_client(fake.base_url, lambda client: client.messages.create(**params))

    assert message.content[0].type == "text"
    assert message.content[0].text == "Plain answer."
    assert message.stop_reason == "end_turn"
    assert fake.api.requests[0].stream is False


def test_thinking_is_omitted_but_signed_where_that_is_the_default_display(fake: Served) -> None:
    fake.api.script([FakeReply([Thinking("hidden"), ToolCall("record_outcome", {})]), FakeReply()])

    async def scenario(client: anthropic.AsyncAnthropic) -> Message:
        first = await stream_message(client, model="claude-opus-5", tools=[RECORD_TOOL])
        assert first.content[0].type == "thinking"
        assert first.content[0].thinking == ""
        assert first.content[0].signature
        history = [USER, first.to_param(), tool_results(first)]
        return await stream_message(client, model="claude-opus-5", messages=history)

    assert with_client(fake.base_url, scenario).stop_reason == "end_turn"


# -- thinking blocks in a tool loop -----------------------------------------------------------


def test_echoed_thinking_is_accepted_and_an_altered_block_is_refused(fake: Served) -> None:
    fake.api.script(
        [FakeReply([Thinking("Check turn 3."), ToolCall("record_outcome", {})]), FakeReply()]
    )

    async def scenario(client: anthropic.AsyncAnthropic) -> str:
        first = await stream_message(client, tools=[RECORD_TOOL])
        history = [USER, first.to_param(), tool_results(first)]
        second = await stream_message(client, tools=[RECORD_TOOL], messages=history)
        assert second.stop_reason == "end_turn"
        altered = first.to_param()
        content = [block.to_dict() for block in altered["content"]]  # type: ignore[union-attr]
        content[0]["thinking"] = "Check turn 4."
        with pytest.raises(anthropic.BadRequestError) as refused:
            await stream_message(
                client,
                tools=[RECORD_TOOL],
                messages=[USER, {"role": "assistant", "content": content}, tool_results(first)],
            )
        return str(refused.value.api_message)

    message = with_client(fake.base_url, scenario)

    assert message == "messages.1.content.0: Invalid `signature` in `thinking` block"
    assert fake.api.requests[1].body["messages"][1]["content"][0]["signature"]


def test_redacted_thinking_round_trips_and_tampering_is_refused(fake: Served) -> None:
    fake.api.script([FakeReply([RedactedThinking(), ToolCall("record_outcome", {})]), FakeReply()])

    async def scenario(client: anthropic.AsyncAnthropic) -> None:
        first = await stream_message(client, tools=[RECORD_TOOL])
        assert first.content[0].type == "redacted_thinking"
        assert first.content[0].data
        history = [USER, first.to_param(), tool_results(first)]
        await stream_message(client, tools=[RECORD_TOOL], messages=history)
        content = [block.to_dict() for block in first.content]
        content[0]["data"] = "AAAA" + str(content[0]["data"])[4:]
        with pytest.raises(anthropic.BadRequestError, match="Invalid `data`"):
            await stream_message(
                client,
                tools=[RECORD_TOOL],
                messages=[USER, {"role": "assistant", "content": content}, tool_results(first)],
            )

    with_client(fake.base_url, scenario)


@pytest.mark.parametrize(
    ("model", "thinking"),
    [
        (BUDGET_MODEL, {"type": "enabled", "budget_tokens": 2048}),
        (MODEL, {"type": "adaptive"}),
    ],
)
def test_dropping_thinking_from_a_tool_loop_is_refused(
    fake: Served, model: str, thinking: JSON
) -> None:
    fake.api.script([FakeReply([Thinking("Plan."), ToolCall("record_outcome", {})])])

    async def scenario(client: anthropic.AsyncAnthropic) -> str:
        params: JSON = {"model": model, "tools": [RECORD_TOOL], "thinking": thinking}
        first = await stream_message(client, **params)
        stripped = [block.to_dict() for block in first.content if block.type != "thinking"]
        history = [USER, {"role": "assistant", "content": stripped}, tool_results(first)]
        with pytest.raises(anthropic.BadRequestError) as refused:
            await stream_message(client, messages=history, **params)
        return str(refused.value.api_message)

    message = with_client(fake.base_url, scenario)

    assert message.startswith(
        "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
        "`tool_use`. When `thinking` is enabled, a final `assistant` message must start"
    )


def test_an_adaptive_turn_that_did_not_think_may_be_echoed_as_is(fake: Served) -> None:
    fake.api.script([FakeReply([ToolCall("record_outcome", {})]), FakeReply()])

    async def scenario(client: anthropic.AsyncAnthropic) -> Message:
        first = await stream_message(client, tools=[RECORD_TOOL], thinking={"type": "adaptive"})
        history = [USER, first.to_param(), tool_results(first)]
        return await stream_message(
            client, tools=[RECORD_TOOL], thinking={"type": "adaptive"}, messages=history
        )

    assert with_client(fake.base_url, scenario).stop_reason == "end_turn"


def test_a_tool_use_without_its_tool_result_is_refused(fake: Served) -> None:
    fake.api.script([FakeReply([ToolCall("record_outcome", {}), ToolCall("record_outcome", {})])])

    async def scenario(client: anthropic.AsyncAnthropic) -> str:
        first = await stream_message(client, tools=[RECORD_TOOL])
        answers = tool_results(first)
        answers["content"] = answers["content"][:1]
        with pytest.raises(anthropic.BadRequestError) as refused:
            await stream_message(
                client, tools=[RECORD_TOOL], messages=[USER, first.to_param(), answers]
            )
        return str(refused.value.api_message)

    message = with_client(fake.base_url, scenario)

    assert "`tool_use` ids were found without `tool_result` blocks immediately after" in message


# -- request validation ---------------------------------------------------------------------


def expect_refusal(fake: Served, error: type[anthropic.APIStatusError], **params: Any) -> str:
    async def scenario(client: anthropic.AsyncAnthropic) -> str:
        with pytest.raises(error) as refused:
            await stream_message(client, **params)
        body = refused.value.body
        assert isinstance(body, dict)
        assert body["type"] == "error"
        assert body["request_id"] == refused.value.request_id
        return str(refused.value.api_message)

    return with_client(fake.base_url, scenario)


@pytest.mark.parametrize(
    ("model", "thinking", "tool_choice"),
    [
        (BUDGET_MODEL, {"type": "enabled", "budget_tokens": 2048}, {"type": "any"}),
        ("claude-sonnet-5-5", {"type": "adaptive"}, {"type": "tool", "name": "record_outcome"}),
        ("claude-fable-5-1", None, {"type": "any"}),  # thinking is on by default there
    ],
)
def test_forcing_a_tool_while_thinking_is_refused(
    fake: Served, model: str, thinking: JSON | None, tool_choice: JSON
) -> None:
    params: JSON = {"model": model, "tools": [RECORD_TOOL], "tool_choice": tool_choice}
    if thinking is not None:
        params["thinking"] = thinking

    message = expect_refusal(fake, anthropic.BadRequestError, **params)

    assert message == "Thinking may not be enabled when tool_choice forces tool use."
    assert fake.api.pending == 0
    assert len(fake.api.requests) == 1


@pytest.mark.parametrize("param", ["temperature", "top_p", "top_k"])
def test_sampling_parameters_are_refused(fake: Served, param: str) -> None:
    message = expect_refusal(fake, anthropic.BadRequestError, extra_body={param: 1})

    assert message.startswith(f"{param}: sampling parameters are not supported")


@pytest.mark.parametrize(
    "model",
    [
        "claude-opus-4-7",
        "claude-opus-4-8",
        "claude-opus-5",
        "claude-opus-5-5",
        "claude-sonnet-5",
        "claude-sonnet-5-5",
        "claude-fable-5-1",
        "claude-mythos-5-1",
        "claude-haiku-5-5",
    ],
)
def test_budget_thinking_is_refused_on_claude_4_7_and_later(fake: Served, model: str) -> None:
    thinking = {"type": "enabled", "budget_tokens": 2048}

    message = expect_refusal(fake, anthropic.BadRequestError, model=model, thinking=thinking)

    assert message.startswith('"thinking.type.enabled" is not supported')


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(512, "greater than or equal to 1024"), (4096, "`max_tokens` must be greater than")],
)
def test_budget_tokens_must_be_at_least_1024_and_below_max_tokens(
    fake: Served, budget: int, expected: str
) -> None:
    thinking = {"type": "enabled", "budget_tokens": budget}

    message = expect_refusal(
        fake, anthropic.BadRequestError, model=BUDGET_MODEL, max_tokens=4096, thinking=thinking
    )

    assert expected in message


def test_more_than_four_cache_breakpoints_are_refused(fake: Served) -> None:
    marked = {"type": "ephemeral"}
    system = [{"type": "text", "text": f"part {i}", "cache_control": marked} for i in range(5)]

    message = expect_refusal(fake, anthropic.BadRequestError, system=system)

    assert message == "A maximum of 4 blocks with cache_control may be provided. Found 5."


def test_a_wrong_or_missing_key_is_an_authentication_error() -> None:
    api = FakeMessagesAPI(api_key="the-key")
    with serve_fake_messages_api(api) as base_url:
        message = expect_refusal(Served(api, base_url), anthropic.AuthenticationError)
        status, raw = post_raw(base_url, "/v1/messages", {"model": MODEL}, {})

    assert message == "invalid authentication credentials"
    assert status == 401
    assert json.loads(raw)["error"]["type"] == "authentication_error"


def test_an_unknown_model_is_not_found(fake: Served) -> None:
    message = expect_refusal(fake, anthropic.NotFoundError, model="claude-nonexistent-9")

    assert message == "model: claude-nonexistent-9"


def test_running_out_of_script_is_a_clear_bad_request(fake: Served) -> None:
    message = expect_refusal(fake, anthropic.BadRequestError)

    assert "nothing scripted for request #1" in message


# -- faults ------------------------------------------------------------------------------------


def test_http_errors_carry_their_type_and_retry_hints(fake: Served) -> None:
    fake.api.script([HttpError.rate_limited(retry_after=2), HttpError(529, retry_after_ms=250)])

    async def scenario(client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.RateLimitError) as limited:
            await stream_message(client)
        assert limited.value.type == "rate_limit_error"
        assert limited.value.response.headers["retry-after"] == "2"
        with pytest.raises(anthropic.OverloadedError) as overloaded:
            await stream_message(client)
        assert overloaded.value.type == "overloaded_error"
        assert overloaded.value.response.headers["retry-after-ms"] == "250"

    with_client(fake.base_url, scenario)


def test_a_mid_stream_error_surfaces_as_a_status_200_api_error(fake: Served) -> None:
    fake.api.script([FakeReply([Text("partial answer")], fault=MidStreamError(after_events=3))])

    async def scenario(client: anthropic.AsyncAnthropic) -> anthropic.APIStatusError:
        with pytest.raises(anthropic.APIStatusError) as failed:
            await stream_message(client)
        return failed.value

    error = with_client(fake.base_url, scenario)

    assert error.status_code == 200
    assert error.type == "overloaded_error"


def test_a_stall_sends_only_pings_for_its_duration(fake: Served) -> None:
    fake.api.script([FakeReply([Text("late")], fault=Stall(seconds=0.3, after_events=1))])
    body = {"model": MODEL, "max_tokens": 1024, "messages": [USER], "stream": True}

    started = time.monotonic()
    _, raw = post_raw(fake.base_url, "/v1/messages", body, {"authorization": "Bearer k"})

    assert time.monotonic() - started >= 0.3
    names = [name for name, _ in sse_events(raw)]
    after_start = names[1 : names.index("content_block_start")]
    assert len(after_start) >= 4
    assert set(after_start) == {"ping"}


def test_a_disconnect_ends_the_stream_before_the_stop_reason(fake: Served) -> None:
    fake.api.script([FakeReply([Text("cut off")], fault=Disconnect(after_events=2))])

    message = with_client(fake.base_url, stream_message)

    assert message.stop_reason is None


# -- stop reasons ------------------------------------------------------------------------------


def test_max_tokens_truncates_tool_input_the_way_the_sdk_sees_it(fake: Served) -> None:
    truncated = ToolCall("record_outcome", raw_json='{"resolved": true, "evidence_tu')
    fake.api.script([FakeReply([truncated], stop_reason="max_tokens")])

    message = with_client(fake.base_url, lambda client: stream_message(client, max_tokens=2000))

    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2000
    tool_use = message.content[0]
    assert tool_use.type == "tool_use"
    assert tool_use.input == {"resolved": True}


def test_a_refusal_carries_stop_details(fake: Served) -> None:
    details = {"type": "refusal", "category": "cyber", "explanation": "Not allowed."}
    fake.api.script([FakeReply([], stop_reason="refusal", stop_details=details)])

    message = with_client(fake.base_url, stream_message)

    assert message.stop_reason == "refusal"
    assert message.stop_details is not None
    assert message.stop_details.category == "cyber"


# -- prompt caching ----------------------------------------------------------------------------


def cached_system(text: str = LONG_TRANSCRIPT, ttl: str | None = None) -> list[JSON]:
    marker: JSON = {"type": "ephemeral"} if ttl is None else {"type": "ephemeral", "ttl": ttl}
    return [
        {"type": "text", "text": "You analyse finished support conversations."},
        {"type": "text", "text": text, "cache_control": marker},
    ]


def usage_of(api: FakeMessagesAPI, base_url: str, bodies: list[JSON]) -> list[JSON]:
    """Send each body in turn; return each response's usage as a dict."""
    api.script([FakeReply() for _ in bodies])

    async def scenario(client: anthropic.AsyncAnthropic) -> list[JSON]:
        usages = []
        for body in bodies:
            message = await stream_message(client, **body)
            usages.append(message.usage.to_dict())
        return usages

    return with_client(base_url, scenario)


def test_a_repeated_long_prefix_is_written_once_then_read(fake: Served) -> None:
    body: JSON = {"system": cached_system(), "messages": [USER]}

    first, second = usage_of(fake.api, fake.base_url, [body, body])

    assert first["cache_creation_input_tokens"] > 1024
    assert first["cache_read_input_tokens"] == 0
    assert (
        first["cache_creation"]["ephemeral_5m_input_tokens"] == first["cache_creation_input_tokens"]
    )
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
    assert second["cache_creation_input_tokens"] == 0
    assert second["input_tokens"] == first["input_tokens"] < 20


def test_a_prefix_below_the_minimum_caches_nothing(fake: Served) -> None:
    body: JSON = {"system": cached_system("A short transcript."), "messages": [USER]}

    usages = usage_of(fake.api, fake.base_url, [body, body])

    for usage in usages:
        assert usage["cache_creation_input_tokens"] == 0
        assert usage["cache_read_input_tokens"] == 0


def test_the_minimum_is_configurable_per_model() -> None:
    api = FakeMessagesAPI(min_cacheable_tokens={MODEL: 10})
    body: JSON = {"system": cached_system("A short transcript, long enough."), "messages": [USER]}
    with serve_fake_messages_api(api) as base_url:
        first, second = usage_of(api, base_url, [body, body])

    assert first["cache_creation_input_tokens"] > 0
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]


def test_entries_expire_after_five_minutes_unless_read() -> None:
    now = [1000.0]
    api = FakeMessagesAPI(clock=lambda: now[0])
    body: JSON = {"system": cached_system(), "messages": [USER]}
    with serve_fake_messages_api(api) as base_url:
        written = usage_of(api, base_url, [body])[0]
        now[0] += 299  # read just in time: the read refreshes the lifetime
        read = usage_of(api, base_url, [body])[0]
        now[0] += 299
        read_again = usage_of(api, base_url, [body])[0]
        now[0] += 301
        expired = usage_of(api, base_url, [body])[0]

    assert written["cache_creation_input_tokens"] > 0
    assert read["cache_read_input_tokens"] == read_again["cache_read_input_tokens"] > 0
    assert expired["cache_read_input_tokens"] == 0
    assert expired["cache_creation_input_tokens"] == written["cache_creation_input_tokens"]


def test_caches_are_per_model(fake: Served) -> None:
    body: JSON = {"system": cached_system(), "messages": [USER]}

    _, other_model = usage_of(fake.api, fake.base_url, [body, {**body, "model": "claude-opus-4-8"}])

    assert other_model["cache_read_input_tokens"] == 0
    assert other_model["cache_creation_input_tokens"] > 0


def test_a_breakpoint_looks_back_at_most_twenty_blocks(fake: Served) -> None:
    blocks: list[JSON] = [{"type": "text", "text": f"note {i}"} for i in range(30)]
    system = [{"type": "text", "text": LONG_TRANSCRIPT}]  # global block 0

    def body_with_breakpoint_at(index: int) -> JSON:
        content = [dict(block) for block in blocks]
        content[index]["cache_control"] = {"type": "ephemeral"}
        return {"system": system, "messages": [{"role": "user", "content": content}]}

    usages = usage_of(
        fake.api,
        fake.base_url,
        [body_with_breakpoint_at(0), body_with_breakpoint_at(21), body_with_breakpoint_at(20)],
    )

    written, too_far, within_reach = usages
    assert written["cache_creation_input_tokens"] > 0
    assert too_far["cache_read_input_tokens"] == 0  # 21 blocks after the entry: a silent miss
    assert within_reach["cache_read_input_tokens"] == written["cache_creation_input_tokens"]


def test_a_thinking_change_invalidates_the_messages_cache_but_not_system(fake: Served) -> None:
    marker = {"type": "ephemeral"}
    long_user = {
        "role": "user",
        "content": [{"type": "text", "text": LONG_TRANSCRIPT, "cache_control": marker}],
    }
    body: JSON = {"system": cached_system(), "messages": [long_user]}
    changed = {**body, "thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}

    first, second = usage_of(fake.api, fake.base_url, [body, changed])

    assert 0 < second["cache_read_input_tokens"] < first["cache_creation_input_tokens"]
    assert second["cache_creation_input_tokens"] > 0


def test_one_hour_and_five_minute_writes_are_reported_apart(fake: Served) -> None:
    long_user = {
        "role": "user",
        "content": [
            {"type": "text", "text": LONG_TRANSCRIPT, "cache_control": {"type": "ephemeral"}}
        ],
    }
    body: JSON = {"system": cached_system(ttl="1h"), "messages": [long_user]}

    (usage,) = usage_of(fake.api, fake.base_url, [body])

    one_hour = usage["cache_creation"]["ephemeral_1h_input_tokens"]
    five_minutes = usage["cache_creation"]["ephemeral_5m_input_tokens"]
    assert one_hour > 1024
    assert five_minutes > 1024
    assert one_hour + five_minutes == usage["cache_creation_input_tokens"]


def test_a_one_hour_breakpoint_after_a_five_minute_one_is_refused(fake: Served) -> None:
    long_user = {
        "role": "user",
        "content": [
            {"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ],
    }

    message = expect_refusal(
        fake, anthropic.BadRequestError, system=cached_system(), messages=[long_user]
    )

    assert "ttl='1h' must not come after" in message


def test_concurrent_identical_requests_all_pay_the_write(fake: Served) -> None:
    fake.api.script([FakeReply(latency=0.5), FakeReply(latency=0.5)])  # both start unwritten
    body: JSON = {"system": cached_system(), "messages": [USER]}

    async def scenario(client: anthropic.AsyncAnthropic) -> list[Message]:
        return list(await asyncio.gather(*(stream_message(client, **body) for _ in range(2))))

    messages = with_client(fake.base_url, scenario)

    assert all(m.usage.cache_creation_input_tokens for m in messages)
    assert not any(m.usage.cache_read_input_tokens for m in messages)


def test_count_tokens_agrees_with_the_usage_report(fake: Served) -> None:
    body: JSON = {"system": cached_system(), "messages": [USER], "tools": [RECORD_TOOL]}
    fake.api.script([FakeReply()])

    async def scenario(client: anthropic.AsyncAnthropic) -> tuple[int, Message]:
        counted = await client.messages.count_tokens(model=MODEL, **body)
        return counted.input_tokens, await stream_message(client, **body)

    counted, message = with_client(fake.base_url, scenario)

    usage = message.usage
    prompt = (
        usage.input_tokens
        + (usage.cache_creation_input_tokens or 0)
        + (usage.cache_read_input_tokens or 0)
    )
    assert counted == prompt == count_input_tokens({"model": MODEL, **body})
    assert fake.api.requests[0].path == "/v1/messages/count_tokens"


# -- scripting, recording, concurrency ------------------------------------------------------


def test_a_responder_function_answers_when_the_script_is_empty() -> None:
    api = FakeMessagesAPI(responder=lambda body: FakeReply([Text(f"model={body['model']}")]))
    with serve_fake_messages_api(api) as base_url:
        api.script([FakeReply([Text("scripted first")])])
        texts = with_client(
            base_url,
            lambda client: asyncio.gather(stream_message(client), stream_message(client)),
        )

    assert sorted(m.content[0].text for m in texts if m.content[0].type == "text") == [
        f"model={MODEL}",
        "scripted first",
    ]


def test_every_request_is_recorded_as_sent(fake: Served) -> None:
    tools = [{**RECORD_TOOL, "name": name} for name in ("record_a", "record_b")]
    tools[-1]["cache_control"] = {"type": "ephemeral"}
    fake.api.script([FakeReply()])

    with_client(fake.base_url, lambda client: stream_message(client, tools=tools))

    sent = fake.api.requests[0]
    assert sent.stream
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert sent.headers["authorization"] == "Bearer test"
    assert [tool["name"] for tool in sent.body["tools"]] == ["record_a", "record_b"]
    assert sent.body["tools"][1]["cache_control"] == {"type": "ephemeral"}
    assert "tool_choice" not in sent.body
    assert "temperature" not in sent.body


def test_hundreds_of_concurrent_streams_are_all_served(fake: Served) -> None:
    streams = 500
    fake.api.script(
        [FakeReply([Text("a reply of a few words")], event_latency=0.01) for _ in range(streams)]
    )

    async def scenario(client: anthropic.AsyncAnthropic) -> list[Message]:
        return list(await asyncio.gather(*(stream_message(client) for _ in range(streams))))

    messages = with_client(fake.base_url, scenario)

    assert len(messages) == streams
    assert all(m.stop_reason == "end_turn" for m in messages)
    assert fake.api.max_active_streams > 1  # how many overlap depends on the machine's speed


# -- the simulated analyst ------------------------------------------------------------------

ANALYST_TOOLS: list[JSON] = [
    {
        "name": "get_turns",
        "description": "Read turns of the transcript.",
        "input_schema": {
            "type": "object",
            "properties": {
                "start": {"type": "integer", "minimum": 0},
                "end": {"type": "integer", "minimum": 0},
            },
            "required": ["start"],
            "additionalProperties": False,
        },
    },
    RECORD_TOOL,
    {
        "name": "record_sentiment",
        "input_schema": {
            "type": "object",
            "properties": {
                "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
                "score": {"type": "integer", "minimum": 1, "maximum": 5},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "summary": {"type": "string", "maxLength": 80},
                "quote": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "evidence_turns": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0, "maximum": 79},
                    "minItems": 1,
                    "uniqueItems": True,
                },
            },
            "required": ["sentiment", "score", "summary", "evidence_turns"],
            "additionalProperties": False,
        },
    },
    {
        "name": "record_procedure_steps",
        "input_schema": {
            "$defs": {
                "step": {
                    "type": "object",
                    "properties": {
                        "order": {"type": "integer", "minimum": 1},
                        "status": {"enum": ["followed", "skipped", "unknown"]},
                        "at": {"type": "string", "format": "date-time"},
                        "kind": {"const": "step"},
                    },
                    "required": ["order", "status", "kind"],
                    "additionalProperties": False,
                }
            },
            "type": "object",
            "properties": {
                "steps": {"type": "array", "items": {"$ref": "#/$defs/step"}, "minItems": 2},
                "flagged": {"type": ["boolean", "null"]},
                "owner": {"type": "string", "format": "email"},
            },
            "required": ["steps", "flagged", "owner"],
            "additionalProperties": False,
        },
    },
]


def analyst_request(variant: int, messages: list[JSON] | None = None) -> JSON:
    return {
        "model": MODEL,
        "max_tokens": 4096,
        "system": [{"type": "text", "text": LONG_TRANSCRIPT}],
        "messages": messages or [{"role": "user", "content": f"Analyse conversation #{variant}."}],
        "tools": ANALYST_TOOLS,
        "thinking": {"type": "adaptive"},
    }


def test_the_simulated_analyst_reads_then_records_everything_then_ends_its_turn() -> None:
    first = simulated_analyst(analyst_request(1))
    assert isinstance(first.content[0], Thinking)
    assert [c.name for c in first.content if isinstance(c, ToolCall)] == ["get_turns"]

    read: list[JSON] = [
        {"type": "tool_use", "id": "t1", "name": "get_turns", "input": {"start": 0}}
    ]
    history: list[JSON] = [
        {"role": "user", "content": "Analyse."},
        {"role": "assistant", "content": read},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "."}]},
    ]
    second = simulated_analyst(analyst_request(1, history))
    recorded = [c.name for c in second.content if isinstance(c, ToolCall)]
    assert recorded == ["record_outcome", "record_sentiment", "record_procedure_steps"]
    assert second.resolved_stop_reason() == "tool_use"

    calls: list[JSON] = read + [
        {"type": "tool_use", "id": f"r{i}", "name": name, "input": {}}
        for i, name in enumerate(recorded)
    ]
    results: list[JSON] = [
        {"type": "tool_result", "tool_use_id": call["id"], "content": "ok"} for call in calls
    ]
    results[2]["is_error"] = True  # record_sentiment was refused: it must be called again
    history = [
        {"role": "user", "content": "Analyse."},
        {"role": "assistant", "content": calls},
        {"role": "user", "content": results},
    ]
    third = simulated_analyst(analyst_request(1, history))
    assert [c.name for c in third.content if isinstance(c, ToolCall)] == ["record_sentiment"]

    results[2].pop("is_error")
    done = simulated_analyst(analyst_request(1, history))
    assert done.resolved_stop_reason() == "end_turn"
    assert isinstance(done.content[-1], Text)
    assert "record_outcome" in done.content[-1].text


def test_the_simulated_analysts_tool_inputs_validate_against_their_schemas() -> None:
    schemas = {tool["name"]: tool["input_schema"] for tool in ANALYST_TOOLS}
    read: list[JSON] = [
        {"type": "tool_use", "id": "t1", "name": "get_turns", "input": {"start": 0}}
    ]
    checked = 0
    for variant in range(40):
        history: list[JSON] = [
            {"role": "user", "content": f"Analyse conversation #{variant}."},
            {"role": "assistant", "content": read},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        ]
        for request in (analyst_request(variant), analyst_request(variant, history)):
            for call in simulated_analyst(request).content:
                if isinstance(call, ToolCall):
                    jsonschema.validate(call.input, schemas[call.name])
                    checked += 1
    assert checked == 40 * 4


def test_the_simulated_analyst_quotes_the_transcript_and_cites_valid_turns() -> None:
    read: list[JSON] = [
        {"type": "tool_use", "id": "t1", "name": "get_turns", "input": {"start": 0}}
    ]
    history: list[JSON] = [
        {"role": "user", "content": "Analyse."},
        {"role": "assistant", "content": read},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
    ]
    reply = simulated_analyst(analyst_request(0, history))
    sentiment = next(
        c for c in reply.content if isinstance(c, ToolCall) and c.name == "record_sentiment"
    )

    assert sentiment.input is not None
    assert sentiment.input["summary"] in LONG_TRANSCRIPT
    assert all(0 <= turn < 80 for turn in sentiment.input["evidence_turns"])


def test_the_simulated_analyst_is_deterministic() -> None:
    assert simulated_analyst(analyst_request(7)) == simulated_analyst(analyst_request(7))
