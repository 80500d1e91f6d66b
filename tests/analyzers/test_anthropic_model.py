"""The Anthropic adapter, through the real SDK, against the fake Messages API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import anthropic
import jsonschema
import pytest

from analyzers.errors import PermanentModelError, RunFailed, TransientModelError
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
from analyzers.model.anthropic import (
    HTTP_CLIENT_KINDS,
    AnthropicModel,
    HttpClientKind,
    build_anthropic_model,
    sdk_http_client,
)
from analyzers.model.profiles import cost_of, profile_for
from analyzers.model.protocol import ModelRequest, ModelTurn, StopReason

T = TypeVar("T")
JSON = dict[str, Any]

MODEL = "claude-sonnet-4-6"
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
TRANSCRIPT = "\n".join(
    f"[{turn}] {'user' if turn % 2 else 'agent'}: the parcel for order {turn} never arrived."
    for turn in range(100)
)
REQUEST = ModelRequest(model=MODEL, max_tokens=4096, system=[], messages=[USER])


@dataclass
class Served:
    api: FakeMessagesAPI
    base_url: str


@dataclass
class Sleeps:
    """A fake `sleep` that records the delays it was asked for and returns at once."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


# Every test of this module runs on each of the adapter's HTTP transports.
HTTP_CLIENT: list[HttpClientKind] = ["aiohttp"]


@pytest.fixture(autouse=True, params=HTTP_CLIENT_KINDS)
def http_client(request: pytest.FixtureRequest) -> Iterator[HttpClientKind]:
    HTTP_CLIENT[0] = request.param
    yield request.param
    HTTP_CLIENT[0] = "aiohttp"


def sdk_client(base_url: str) -> anthropic.AsyncAnthropic:
    """A real SDK client on the transport under test, retries off (the adapter owns them)."""
    timeout = anthropic.Timeout(600.0, connect=5.0)
    return anthropic.AsyncAnthropic(
        api_key="test",
        base_url=base_url,
        max_retries=0,
        http_client=sdk_http_client(HTTP_CLIENT[0], timeout=timeout),
    )


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    api = FakeMessagesAPI()
    with serve_fake_messages_api(api) as base_url:
        yield Served(api, base_url)


@pytest.fixture
def fake(served: Served) -> Served:
    served.api.reset()
    served.api.responder = None
    return served


def with_model(
    base_url: str,
    scenario: Callable[[AnthropicModel], Awaitable[T]],
    *,
    sleep: Sleeps | None = None,
    attempts: int = 3,
) -> T:
    """Run `scenario` with an adapter over a real SDK client pointed at the fake."""

    async def main() -> T:
        client = sdk_client(base_url)
        model = AnthropicModel(client, max_call_attempts=attempts, sleep=sleep or Sleeps())
        try:
            return await scenario(model)
        finally:
            await model.aclose()

    return asyncio.run(main())


def complete(
    fake: Served, request: ModelRequest = REQUEST, *, sleep: Sleeps | None = None
) -> ModelTurn:
    return with_model(fake.base_url, lambda model: model.complete(request), sleep=sleep)


def tool_results(turn: ModelTurn, content: str = "ok") -> JSON:
    return {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": block["id"], "content": content}
            for block in turn.tool_uses()
        ],
    }


# -- one turn ---------------------------------------------------------------------------------


def test_a_turn_comes_back_whole_and_ready_to_echo(fake: Served) -> None:
    fake.api.script(
        [
            FakeReply(
                [
                    Thinking("Turn 3 shows the refund was promised."),
                    RedactedThinking(),
                    Text("Recording."),
                    ToolCall("record_outcome", {"resolved": True, "evidence_turns": [3]}),
                ],
                output_tokens=321,
            )
        ]
    )

    turn = complete(fake, replace(REQUEST, tools=[RECORD_TOOL]))

    assert [block["type"] for block in turn.content] == [
        "thinking",
        "redacted_thinking",
        "text",
        "tool_use",
    ]
    thinking, redacted, text, tool_use = turn.content
    assert set(thinking) == {"type", "thinking", "signature"}
    assert thinking["signature"]
    assert set(redacted) == {"type", "data"}
    assert redacted["data"]
    assert text == {"type": "text", "text": "Recording."}
    assert tool_use["input"] == {"resolved": True, "evidence_turns": [3]}
    assert turn.tool_uses() == [tool_use]
    assert turn.text() == "Recording."
    assert turn.stop_reason == "tool_use"
    assert turn.stop_details is None
    assert turn.usage.output_tokens == 321
    assert turn.usage.input_tokens > 0
    assert turn.model == MODEL
    assert turn.message_id.startswith("msg_")
    assert turn.duration_s > 0


def test_the_request_always_streams_never_forces_a_tool_and_never_samples(fake: Served) -> None:
    fake.api.script([FakeReply()])
    system = [{"type": "text", "text": "You analyse conversations."}]

    complete(fake, replace(REQUEST, system=system, tools=[RECORD_TOOL], effort="medium"))

    sent = fake.api.requests[0].body
    assert sent["stream"] is True
    assert "tool_choice" not in sent
    assert not {"temperature", "top_p", "top_k"} & set(sent)
    assert sent["thinking"] == {"type": "adaptive"}
    assert sent["output_config"] == {"effort": "medium"}
    assert sent["system"] == system
    assert sent["tools"] == [RECORD_TOOL]


def test_budget_thinking_becomes_adaptive_where_the_model_refuses_budgets(fake: Served) -> None:
    fake.api.script([FakeReply()])
    request = replace(REQUEST, model="claude-opus-5-5", thinking="enabled", budget_tokens=2048)

    turn = complete(fake, request)

    assert turn.stop_reason == "end_turn"
    assert fake.api.requests[0].body["thinking"] == {"type": "adaptive"}


def test_budget_thinking_is_sent_where_it_is_the_only_mode(fake: Served) -> None:
    fake.api.script([FakeReply([Thinking("Plan."), Text("Done.")])])
    request = replace(REQUEST, model="claude-haiku-4-5", thinking="enabled", budget_tokens=2048)

    complete(fake, request)

    assert fake.api.requests[0].body["thinking"] == {"type": "enabled", "budget_tokens": 2048}


def test_echoed_content_continues_the_tool_loop_and_an_altered_block_is_refused(
    fake: Served,
) -> None:
    fake.api.script(
        [
            FakeReply([Thinking("Check turn 2."), ToolCall("record_outcome", {"resolved": True})]),
            FakeReply([Text("Recorded.")]),
        ]
    )

    async def scenario(model: AnthropicModel) -> tuple[str, ModelTurn]:
        first = await model.complete(replace(REQUEST, tools=[RECORD_TOOL]))
        history = [USER, {"role": "assistant", "content": first.content}, tool_results(first)]
        second = await model.complete(replace(REQUEST, tools=[RECORD_TOOL], messages=history))
        assert second.stop_reason == "end_turn"
        assert second.text() == "Recorded."
        altered = [dict(block) for block in first.content]
        altered[0]["thinking"] = "Check turn 5."
        history[1] = {"role": "assistant", "content": altered}
        with pytest.raises(PermanentModelError) as refused:
            await model.complete(replace(REQUEST, tools=[RECORD_TOOL], messages=history))
        return str(refused.value), first

    message, first = with_model(fake.base_url, scenario)

    assert "400 invalid_request_error" in message
    assert "messages.1.content.0: Invalid `signature` in `thinking` block" in message
    assert fake.api.requests[1].body["messages"][1]["content"] == first.content


@pytest.mark.parametrize(
    ("stop_reason", "extra"),
    [
        ("end_turn", {}),
        ("tool_use", {}),
        ("max_tokens", {}),
        ("stop_sequence", {"stop_sequence": "###"}),
        ("pause_turn", {}),
        ("refusal", {"stop_details": {"type": "refusal", "category": "bio", "explanation": "No."}}),
        ("model_context_window_exceeded", {}),
    ],
)
def test_every_stop_reason_surfaces_in_the_turn(
    fake: Served, stop_reason: StopReason, extra: JSON
) -> None:
    content = [ToolCall("record_outcome", {"resolved": False})] if stop_reason == "tool_use" else []
    fake.api.script([FakeReply([Text("Partial"), *content], stop_reason=stop_reason, **extra)])

    turn = complete(fake, replace(REQUEST, tools=[RECORD_TOOL]))

    assert turn.stop_reason == stop_reason
    if stop_reason == "refusal":
        assert turn.stop_details == extra["stop_details"]
    if stop_reason == "max_tokens":
        assert turn.usage.output_tokens == REQUEST.max_tokens


def test_a_tool_input_cut_off_by_max_tokens_comes_back_partial(fake: Served) -> None:
    cut = ToolCall("record_outcome", raw_json='{"resolved": false, "evidence_turns": [1, 2')
    fake.api.script([FakeReply([cut], stop_reason="max_tokens")])

    turn = complete(fake, replace(REQUEST, tools=[RECORD_TOOL]))

    assert turn.stop_reason == "max_tokens"
    assert turn.tool_uses()[0]["input"] == {"resolved": False, "evidence_turns": [1, 2]}


# -- retries ----------------------------------------------------------------------------------


def test_a_rate_limit_is_retried_after_the_hinted_delay(fake: Served) -> None:
    fake.api.script(
        [
            HttpError.rate_limited(retry_after=1.5),
            HttpError(429, "rate_limit_error", "slow down", retry_after_ms=250, retry_after=9),
            FakeReply([Text("finally")]),
        ]
    )
    sleeps = Sleeps()

    turn = complete(fake, sleep=sleeps)

    assert turn.text() == "finally"
    assert sleeps.delays == [1.5, 0.25]  # retry-after-ms wins over retry-after
    assert len(fake.api.requests) == 3


def test_a_rate_limit_that_persists_becomes_a_transient_error_with_the_hint(fake: Served) -> None:
    fake.api.script([HttpError.rate_limited(retry_after=2) for _ in range(3)])
    sleeps = Sleeps()

    with pytest.raises(TransientModelError) as failed:
        complete(fake, sleep=sleeps)

    assert failed.value.retry_after == 2
    assert "after 3 attempt(s)" in str(failed.value)
    assert "429 rate_limit_error" in str(failed.value)
    assert sleeps.delays == [2, 2]
    assert len(fake.api.requests) == 3


def test_overload_is_retried_with_exponential_backoff_and_jitter(fake: Served) -> None:
    fake.api.script([HttpError.overloaded(), HttpError.overloaded(), FakeReply()])
    sleeps = Sleeps()

    turn = complete(fake, sleep=sleeps)

    assert turn.stop_reason == "end_turn"
    first, second = sleeps.delays
    assert 0.375 <= first <= 0.5
    assert 0.75 <= second <= 1.0


def test_overload_that_persists_becomes_a_transient_error(fake: Served) -> None:
    fake.api.script([HttpError(529, retry_after=4) for _ in range(3)])
    sleeps = Sleeps()

    with pytest.raises(TransientModelError) as failed:
        complete(fake, sleep=sleeps)

    assert failed.value.retry_after == 4
    assert "529 overloaded_error" in str(failed.value)
    assert sleeps.delays == [4, 4]


def test_a_server_error_is_retried(fake: Served) -> None:
    fake.api.script([HttpError.internal(), FakeReply()])

    assert complete(fake).stop_reason == "end_turn"
    assert len(fake.api.requests) == 2


def test_a_mid_stream_error_is_retried_then_succeeds(fake: Served) -> None:
    fake.api.script(
        [
            FakeReply([Thinking("..."), Text("half")], fault=MidStreamError(after_events=4)),
            FakeReply([Text("whole")]),
        ]
    )
    sleeps = Sleeps()

    turn = complete(fake, sleep=sleeps)

    assert turn.text() == "whole"
    assert len(sleeps.delays) == 1


def test_a_stream_cut_before_its_stop_reason_is_retried(fake: Served) -> None:
    fake.api.script([FakeReply([Text("cut")], fault=Disconnect(after_events=3)), FakeReply()])

    assert complete(fake).stop_reason == "end_turn"
    assert len(fake.api.requests) == 2


def test_malformed_tool_json_from_the_model_is_retried(fake: Served) -> None:
    broken = ToolCall("record_outcome", raw_json='{"resolved": tru}')
    fake.api.script([FakeReply([broken]), FakeReply([broken]), FakeReply([broken])])

    with pytest.raises(TransientModelError, match="malformed tool input"):
        complete(fake, replace(REQUEST, tools=[RECORD_TOOL]))
    assert len(fake.api.requests) == 3


def test_a_stalled_stream_times_out_and_is_retried(fake: Served) -> None:
    stall = Stall(seconds=30, after_events=1, ping_interval=0.02)
    fake.api.script([FakeReply([Text("stalled")], fault=stall), FakeReply([Text("retried")])])
    sleeps = Sleeps()

    turn = complete(fake, replace(REQUEST, idle_timeout=0.2), sleep=sleeps)

    assert turn.text() == "retried"  # the pings did not keep the stalled stream alive
    assert len(sleeps.delays) == 1
    give_up = time.monotonic() + 10
    while fake.api.active_streams and time.monotonic() < give_up:
        time.sleep(0.01)  # the server notices the abandoned stream and stops pinging it
    assert fake.api.active_streams == 0


def test_a_stream_that_keeps_stalling_becomes_a_transient_error(fake: Served) -> None:
    stall = Stall(seconds=5, after_events=2, ping_interval=0.02)
    fake.api.script([FakeReply(fault=stall) for _ in range(3)])

    with pytest.raises(TransientModelError, match=r"stream idle for more than 0\.15s"):
        complete(fake, replace(REQUEST, idle_timeout=0.15))
    assert len(fake.api.requests) == 3


def test_connection_errors_are_retried_then_transient() -> None:
    with socket.socket() as closed:  # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    sleeps = Sleeps()

    with pytest.raises(TransientModelError, match="connection error"):
        with_model(f"http://127.0.0.1:{port}", lambda model: model.complete(REQUEST), sleep=sleeps)
    assert len(sleeps.delays) == 2


# -- deadlines and permanent errors --------------------------------------------------------------


def test_a_deadline_reached_mid_stream_fails_the_run(fake: Served) -> None:
    fake.api.script([FakeReply(fault=Stall(seconds=5, ping_interval=0.02))])
    request = replace(REQUEST, deadline=time.monotonic() + 0.3, idle_timeout=60)

    with pytest.raises(RunFailed) as failed:
        complete(fake, request)

    assert failed.value.reason == "deadline_exceeded"
    assert len(fake.api.requests) == 1


def test_a_deadline_already_passed_sends_nothing(fake: Served) -> None:
    with pytest.raises(RunFailed) as failed:
        complete(fake, replace(REQUEST, deadline=time.monotonic() - 1))

    assert failed.value.reason == "deadline_exceeded"
    assert fake.api.requests == []


def test_no_retry_waits_past_the_deadline(fake: Served) -> None:
    fake.api.script([HttpError.rate_limited(retry_after=30)])
    sleeps = Sleeps()

    with pytest.raises(TransientModelError, match="too soon to wait") as failed:
        complete(fake, replace(REQUEST, deadline=time.monotonic() + 5), sleep=sleeps)

    assert failed.value.retry_after == 30
    assert sleeps.delays == []


def test_a_hint_longer_than_the_call_waits_fails_at_once_with_the_hint(fake: Served) -> None:
    fake.api.script([HttpError.rate_limited(retry_after=120)])
    sleeps = Sleeps()

    with pytest.raises(TransientModelError, match="asks to wait 120s") as failed:
        complete(fake, sleep=sleeps)

    assert failed.value.retry_after == 120
    assert sleeps.delays == []


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
    ],
)
def test_requests_the_api_will_never_accept_are_permanent(
    fake: Served, status: int, error_type: str
) -> None:
    fake.api.script([HttpError(status, error_type, f"refused with {status}")])

    with pytest.raises(PermanentModelError, match=f"{status} {error_type}: refused with {status}"):
        complete(fake)
    assert len(fake.api.requests) == 1


def test_an_unknown_model_is_permanent(fake: Served) -> None:
    with pytest.raises(PermanentModelError, match="404 not_found_error: model: claude-nope"):
        complete(fake, replace(REQUEST, model="claude-nope"))


def test_a_bad_key_is_permanent() -> None:
    api = FakeMessagesAPI(api_key="right")
    with serve_fake_messages_api(api) as base_url, pytest.raises(PermanentModelError, match="401"):
        with_model(base_url, lambda model: model.complete(REQUEST))


# -- caching and token counting -----------------------------------------------------------------


def cached_request(transcript: str) -> ModelRequest:
    system: list[JSON] = [
        {"type": "text", "text": "You analyse finished conversations."},
        {"type": "text", "text": transcript, "cache_control": {"type": "ephemeral"}},
    ]
    return replace(REQUEST, system=system)


def test_a_shared_transcript_prefix_is_cached_across_calls(fake: Served) -> None:
    fake.api.script([FakeReply(), FakeReply()])
    request = cached_request(TRANSCRIPT)

    async def scenario(model: AnthropicModel) -> tuple[ModelTurn, ModelTurn]:
        return await model.complete(request), await model.complete(request)

    first, second = with_model(fake.base_url, scenario)

    assert first.usage.cache_creation_input_tokens > 1024
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens < 20
    assert first.usage.prompt_tokens == second.usage.prompt_tokens


def test_cache_writes_are_reported_by_lifetime(fake: Served) -> None:
    """A 1-hour breakpoint on the transcript and a 5-minute one after it: the turn's usage says
    how many of the written tokens live an hour, so they can be priced at the 1-hour rate."""
    fake.api.script([FakeReply()])
    system: list[JSON] = [
        {"type": "text", "text": "You analyse finished conversations."},
        {"type": "text", "text": TRANSCRIPT, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    question = {
        "type": "text",
        "text": "Long brief. " * 400,
        "cache_control": {"type": "ephemeral"},
    }
    request = replace(REQUEST, system=system, messages=[{"role": "user", "content": [question]}])

    (turn,) = with_model(fake.base_url, lambda model: _one(model, request))

    assert 0 < turn.usage.cache_creation_1h_input_tokens < turn.usage.cache_creation_input_tokens
    one_hour = turn.usage.cache_creation_1h_input_tokens
    five_minutes = turn.usage.cache_creation_input_tokens - one_hour
    prices = profile_for(REQUEST.model).prices
    assert cost_of(REQUEST.model, turn.usage).cache_write_usd == pytest.approx(
        (one_hour * prices.cache_write_1h + five_minutes * prices.cache_write_5m) / 1_000_000
    )


async def _one(model: AnthropicModel, request: ModelRequest) -> list[ModelTurn]:
    return [await model.complete(request)]


def test_a_short_prefix_is_not_cached(fake: Served) -> None:
    fake.api.script([FakeReply(), FakeReply()])
    request = cached_request("[0] user: hello")

    async def scenario(model: AnthropicModel) -> list[ModelTurn]:
        return [await model.complete(request), await model.complete(request)]

    for turn in with_model(fake.base_url, scenario):
        assert turn.usage.cache_creation_input_tokens == 0
        assert turn.usage.cache_read_input_tokens == 0


def test_count_tokens_counts_what_complete_would_send(fake: Served) -> None:
    request = replace(cached_request(TRANSCRIPT), tools=[RECORD_TOOL])

    counted = with_model(fake.base_url, lambda model: model.count_tokens(request))

    sent = fake.api.requests[0]
    assert sent.path == "/v1/messages/count_tokens"
    assert counted == count_input_tokens(sent.body) > 1024
    assert sent.body["thinking"] == {"type": "adaptive"}


def test_build_anthropic_model_turns_sdk_retries_off(
    fake: Served, http_client: HttpClientKind
) -> None:
    """Every one of the model's SDK clients has its own retries off: the adapter owns them.
    One pool on aiohttp (no per-request scan of the pool), 8 on httpx."""
    fake.api.script([HttpError(529, retry_after_ms=10), FakeReply()])
    transport = {
        "aiohttp": anthropic.DefaultAioHttpClient,
        "httpx": anthropic.DefaultAsyncHttpxClient,
    }

    async def scenario() -> ModelTurn:
        model = build_anthropic_model("test", fake.base_url, timeout=30, http_client=http_client)
        try:
            pools = 1 if http_client == "aiohttp" else 8
            assert [client.max_retries for client in model._clients] == [0] * pools
            assert all(type(client._client) is transport[http_client] for client in model._clients)
            return await model.complete(REQUEST)
        finally:
            await model.aclose()

    assert asyncio.run(scenario()).stop_reason == "end_turn"
    assert [r.headers["x-stainless-retry-count"] for r in fake.api.requests] == ["0", "0"]


@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")  # any case (re.I)
def test_a_model_works_from_one_event_loop_after_another(
    fake: Served, http_client: HttpClientKind
) -> None:
    """A model that outlives its event loop (`asyncio.run` twice) still reaches the API on
    aiohttp: a session belongs to one loop, so the adapter opens new ones on the next loop.
    The httpx fallback keeps the limit it always had: its pool hands the second loop a
    keep-alive socket of the closed one."""
    fake.api.script([FakeReply([Text("first")]), FakeReply([Text("second")])])
    model = build_anthropic_model("test", fake.base_url, timeout=30, http_client=http_client)

    async def last() -> str:
        try:
            return (await model.complete(REQUEST)).text()
        finally:
            await model.aclose()

    try:
        assert asyncio.run(model.complete(REQUEST)).text() == "first"
        if http_client == "aiohttp":
            assert asyncio.run(last()) == "second"
        else:
            with pytest.raises(RuntimeError, match="Event loop is closed"):
                asyncio.run(last())
    finally:
        # The first loop's connections went with it, unclosed: finalize them here, where their
        # ResourceWarnings are expected, not in whichever test the collector next runs in.
        model = None  # type: ignore[assignment]  # also the closure's reference
        gc.collect()
    assert len(fake.api.requests) == 2  # both calls were sent


# -- the simulated analyst, end to end -----------------------------------------------------------


SENTIMENT_TOOL: JSON = {
    "name": "record_sentiment",
    "input_schema": {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
            "summary": {"type": "string"},
            "evidence_turns": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        },
        "required": ["sentiment", "summary", "evidence_turns"],
        "additionalProperties": False,
    },
}
GET_TURNS_TOOL: JSON = {
    "name": "get_turns",
    "input_schema": {
        "type": "object",
        "properties": {"start": {"type": "integer", "minimum": 0}},
        "required": ["start"],
        "additionalProperties": False,
    },
}


def test_the_simulated_analyst_runs_a_whole_tool_loop_through_the_sdk() -> None:
    api = FakeMessagesAPI(responder=simulated_analyst)
    tools = [GET_TURNS_TOOL, RECORD_TOOL, SENTIMENT_TOOL]
    schemas = {tool["name"]: tool["input_schema"] for tool in tools}
    request = replace(cached_request(TRANSCRIPT), tools=tools, model="claude-opus-5")

    async def analyse(model: AnthropicModel) -> tuple[list[ModelTurn], list[JSON]]:
        messages: list[JSON] = [USER]
        turns: list[ModelTurn] = []
        recorded: list[JSON] = []
        for _ in range(5):
            turn = await model.complete(replace(request, messages=messages))
            turns.append(turn)
            if turn.stop_reason != "tool_use":
                break
            for call in turn.tool_uses():
                jsonschema.validate(call["input"], schemas[call["name"]])
                recorded.append(call)
            messages = [*messages, {"role": "assistant", "content": turn.content}]
            messages.append(tool_results(turn))
        return turns, recorded

    with serve_fake_messages_api(api) as base_url:
        turns, recorded = with_model(base_url, analyse)

    assert [turn.stop_reason for turn in turns] == ["tool_use", "tool_use", "end_turn"]
    assert [call["name"] for call in recorded] == [
        "get_turns",
        "record_outcome",
        "record_sentiment",
    ]
    assert turns[0].content[0]["type"] == "thinking"  # echoed back, signature and all
    assert turns[1].usage.cache_read_input_tokens > 0  # the transcript prefix was shared
    assert "record_sentiment" in turns[-1].text()


def test_calls_are_spread_over_the_models_clients(fake: Served) -> None:
    """With several SDK clients (several connection pools), calls go to each in turn."""
    other_api = FakeMessagesAPI()
    fake.api.script([FakeReply([Text("a")]), FakeReply([Text("c")])])
    other_api.script([FakeReply([Text("b")])])

    async def scenario(other_url: str) -> list[str]:
        clients = [sdk_client(url) for url in (fake.base_url, other_url)]
        model = AnthropicModel(clients)
        try:
            return [(await model.complete(REQUEST)).text() for _ in range(3)]
        finally:
            await model.aclose()

    with serve_fake_messages_api(other_api) as other_url:
        texts = asyncio.run(scenario(other_url))
    assert texts == ["a", "b", "c"]
    assert len(fake.api.requests) == 2
    assert len(other_api.requests) == 1
