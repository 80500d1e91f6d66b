"""The adapter tells its `on_retry` hook why it called the API again (the worker counts
`posthoc_model_retries_total{cause}`), in a word from a fixed list."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anthropic
import pytest

from analyzers.fakes import (
    Disconnect,
    FakeMessagesAPI,
    FakeReply,
    HttpError,
    Text,
    serve_fake_messages_api,
)
from analyzers.fakes.replies import Scripted
from analyzers.model.anthropic import (
    HTTP_CLIENT_KINDS,
    AnthropicModel,
    HttpClientKind,
    sdk_http_client,
)
from analyzers.model.protocol import ModelRequest

REQUEST = ModelRequest(
    model="claude-sonnet-4-6",
    max_tokens=1024,
    system=[],
    messages=[{"role": "user", "content": "Analyse the conversation."}],
)


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[FakeMessagesAPI, str]]:
    fake = FakeMessagesAPI()
    with serve_fake_messages_api(fake) as base_url:
        yield fake, base_url


async def _no_sleep(_: float) -> None:
    return None


@pytest.mark.parametrize(
    ("failure", "cause"),
    [
        (HttpError(429, "rate_limit_error", "slow down"), "rate_limited"),
        (HttpError(529), "overloaded"),
        (HttpError(500, "api_error", "boom"), "server_error"),
        (HttpError(408, "timeout_error", "late"), "timeout"),
        (FakeReply([Text("cut")], fault=Disconnect(after_events=3)), "stream_dropped"),
    ],
)
@pytest.mark.parametrize("http_client", HTTP_CLIENT_KINDS)
def test_each_retry_is_reported_with_its_cause(
    api: tuple[FakeMessagesAPI, str], failure: Scripted, cause: str, http_client: HttpClientKind
) -> None:
    fake, base_url = api
    fake.reset()
    fake.responder = None
    fake.script([failure, FakeReply([Text("fine")])])
    causes: list[str] = []

    async def main() -> str:
        client = anthropic.AsyncAnthropic(
            api_key="test",
            base_url=base_url,
            max_retries=0,
            http_client=sdk_http_client(http_client, timeout=anthropic.Timeout(30.0)),
        )
        model = AnthropicModel(client, sleep=_no_sleep, on_retry=causes.append)
        try:
            return (await model.complete(REQUEST)).text()
        finally:
            await model.aclose()

    assert asyncio.run(main()) == "fine"
    assert causes == [cause]
