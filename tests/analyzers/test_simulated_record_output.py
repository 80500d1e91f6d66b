"""The shipped simulated analyst (used by `posthoc demo` and the worker tests) records every
output of the built-ins through `record_output`, citing only turns and events that exist."""

from __future__ import annotations

import asyncio

import pytest

import analyzers
from analyzers.fakes import FakeMessagesAPI, serve_fake_messages_api
from analyzers.fakes.simulated import simulated_analyst
from analyzers.model.anthropic import build_anthropic_model
from schemas import AnalysisResult
from tests.analyzers.helpers import builtin_analyzer, example_conversation


@pytest.mark.parametrize("conversation_name", ["escalated_outage", "voicemail"])
def test_the_simulated_analyst_records_every_builtin_output(conversation_name: str) -> None:
    conversation = example_conversation(conversation_name)
    api = FakeMessagesAPI(responder=simulated_analyst)
    with serve_fake_messages_api(api) as base_url:

        async def go() -> list[AnalysisResult]:
            model = build_anthropic_model("simulated", base_url, timeout=30)
            try:
                return [
                    await analyzers.run(builtin_analyzer(name), conversation, model=model)
                    for name in ("next_steps", "follow_ups", "quality")
                ]
            finally:
                await model.aclose()

        results = asyncio.run(go())

    for result in results:
        assert result.status == "succeeded", result.error
        (recorded,) = next(iter(result.outputs.values()))
        assert all(0 <= turn < len(conversation.turns) for turn in recorded.evidence_turns)
        assert all(0 <= event < len(conversation.events) for event in recorded.evidence_events)
        recordings = [call for call in result.trace if call.kind == "output"]
        assert recordings, "recorded through record_output"
        assert all(call.tool_name == "record_output" for call in recordings)
        assert all(call.succeeded for call in recordings), "no recording was refused"
