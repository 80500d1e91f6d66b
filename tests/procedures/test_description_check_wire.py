"""The description check over real HTTP: the real `anthropic` SDK through posthoc's adapter to
the shipped fake Messages API, which validates requests as the API does. The request is accepted
as sent (no thinking where the model allows it, a small max_tokens), and a stream cut at the
worst moment (mid-answer) means "does not apply" with the reason, never a crash."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anthropic
import pytest

from analyzers.fakes import FakeMessagesAPI, serve_fake_messages_api
from analyzers.fakes.replies import Disconnect, FakeReply, Text
from analyzers.fakes.simulated import simulated_analyst
from analyzers.model.anthropic import AnthropicModel
from analyzers.procedures.selection import CHECK_MAX_TOKENS, Selection, select_procedures
from tests.analyzers.helpers import example_conversation, example_definitions

VERDICT = '{"vendor_onboarding": {"applies": true, "reason": "turn 1 asks for a new vendor"}}'


@pytest.fixture
def api() -> Iterator[tuple[FakeMessagesAPI, str]]:
    fake = FakeMessagesAPI()
    with serve_fake_messages_api(fake) as base_url:
        yield fake, base_url


def check(base_url: str) -> Selection:
    seed = example_conversation("vendor_onboarding").model_copy(update={"events": []})
    _, procedures = example_definitions()

    async def main() -> Selection:
        client = anthropic.AsyncAnthropic(api_key="test", base_url=base_url, max_retries=0)
        model = AnthropicModel(client, max_call_attempts=1)
        try:
            return await select_procedures(
                ["vendor_onboarding"],
                seed,
                procedures,
                model=model,
                model_id="claude-sonnet-5-5",
            )
        finally:
            await model.aclose()

    return asyncio.run(main())


def test_the_check_is_a_valid_cheap_request(api: tuple[FakeMessagesAPI, str]) -> None:
    fake, base_url = api
    fake.script([FakeReply([Text(VERDICT)])])
    selection = check(base_url)

    [record] = selection.records
    assert (record.applies, record.path) == (True, "description")
    assert selection.usage.output_tokens > 0
    [request] = fake.requests
    body = request.body
    assert body["max_tokens"] == CHECK_MAX_TOKENS
    # Sonnet 5.5 turns thinking off as `between_tools`: with no tools, no thinking at all.
    assert body["thinking"] == {"type": "between_tools"}
    assert body["output_config"] == {"effort": "low"}
    assert "tools" not in body


def test_a_stream_cut_mid_answer_means_not_applied(api: tuple[FakeMessagesAPI, str]) -> None:
    fake, base_url = api
    fake.script([FakeReply([Text(VERDICT)], fault=Disconnect(after_events=3))])
    selection = check(base_url)

    [record] = selection.records
    assert (record.applies, record.path, record.status) == (False, "description", "not_applied")
    assert "the description check failed (TransientModelError)" in record.reason
    assert selection.applied == []


def test_the_simulated_analyst_answers_the_check(api: tuple[FakeMessagesAPI, str]) -> None:
    """Benchmarks and fleet tests run the simulated analyst: it gives a readable verdict."""
    fake, base_url = api
    fake.responder = simulated_analyst
    selection = check(base_url)

    [record] = selection.records
    assert (record.applies, record.path) == (True, "description")
