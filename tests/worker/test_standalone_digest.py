"""A standalone `daily_digest` run end to end: a schedule fires, the run is recorded on a
selection record, the engine runs it with ledger tools bounded to the selection (one tenant,
the last 24 hours), the digest is recorded and delivered like any other result. Once with the
scripted model, once through the real `anthropic` SDK against the fake Messages API."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from analyzers.fakes import FakeMessagesAPI, FakeReply, ToolCall, serve_fake_messages_api
from analyzers.fakes.simulated import simulated_analyst
from analyzers.model.anthropic import build_anthropic_model
from analyzers.model.protocol import ModelClient, ModelRequest, ModelTurn
from analyzers.testing import ScriptedModel, reply, text, tool_call
from schemas import AnalysisResult, AnalyzerSpec, Conversation
from schemas.schedule import ScheduleSpec
from worker.catalog import Catalog
from worker.engine.runner import Engine, EngineConfig
from worker.ledger import Ledger, ManualClock, RunPlan
from worker.ledger.deliveries import DeliveryLedger
from worker.scheduling.actions import ScheduleActions
from worker.settings import Settings
from worker.sinks.delivery import Deliverer

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
SCHEDULE = ScheduleSpec.model_validate(
    {
        "name": "acme_daily_digest",
        "cron": "0 10 * * *",
        "standalone": {"analyzer": "daily_digest", "tenant": "acme", "since": {"hours": 24}},
    }
)
DIGEST = {
    "summary": "Two open follow-ups; one urgent refund.",
    "counts": {"urgent": 1, "high": 1, "normal": 0},
    "items": [
        {"conversation_id": "c-1", "priority": "urgent", "reason": "Refund", "action": "Refund"},
        {"conversation_id": "c-2", "priority": "high", "reason": "Outage", "action": "Call"},
    ],
}


def follow_up(priority: str) -> dict[str, Any]:
    return {
        "value": {
            "priority": priority,
            "reason": f"A {priority} matter the customer raised.",
            "suggested_action": "Call the customer back.",
        },
        "evidence_turns": [0],
    }


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    """The built-ins, with daily_digest delivering to a JSONL file."""
    loaded = Catalog.load()
    digest = loaded.analyzers["daily_digest"]
    routed = AnalyzerSpec.model_validate(
        digest.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        | {"sinks": [{"type": "jsonl", "path": str(tmp_path / "digests.jsonl")}]}
    )
    others = [spec for spec in loaded.analyzers.values() if spec.name != "daily_digest"]
    return Catalog.from_specs([*others, routed], loaded.procedures)


def store_follow_ups(
    ledger: Ledger, clock: ManualClock, conversation_id: str, tenant: str, *values: Any
) -> None:
    conversation = Conversation.model_validate(
        {
            "conversation_id": conversation_id,
            "tenant_id": tenant,
            "outcome": "escalated",
            "turns": [{"role": "user", "text": f"Help with {conversation_id}, please."}],
        }
    )
    ref = ledger.save_conversation(conversation)
    [run] = ledger.record_runs(ref.pk, [RunPlan("follow_ups", "1.0.0")], trigger="cli")
    assert ledger.claim(run.id, "w", 60) is not None
    result = AnalysisResult.model_validate(
        {
            "run_id": run.id,
            "conversation_id": conversation_id,
            "tenant_id": tenant,
            "analyzer": "follow_ups",
            "analyzer_version": "1.0.0",
            "status": "succeeded",
            "outputs": {"follow_up": list(values)},
        }
    )
    assert ledger.complete(run.id, "w", result)


@pytest.fixture
def stored(ledger: Ledger, clock: ManualClock) -> None:
    """Follow-ups of acme in the window, of another tenant, and of acme two days ago."""
    clock.set(datetime(2026, 11, 18, 9, 0, tzinfo=UTC))
    store_follow_ups(ledger, clock, "c-old", "acme", follow_up("urgent"))
    clock.set(datetime(2026, 11, 19, 18, 0, tzinfo=UTC))
    store_follow_ups(ledger, clock, "c-1", "acme", follow_up("urgent"))
    store_follow_ups(ledger, clock, "c-2", "acme", follow_up("high"))
    store_follow_ups(ledger, clock, "c-quiet", "acme")  # nothing to follow up
    store_follow_ups(ledger, clock, "c-globex", "globex", follow_up("urgent"))
    clock.set(NOW)


def fire_and_process(ledger: Ledger, catalog: Catalog, model: ModelClient) -> AnalysisResult:
    sent: list[str] = []
    actions = ScheduleActions(ledger, catalog, enqueue=sent.extend, max_attempts=3)
    detail = actions(SCHEDULE, NOW)
    assert detail["created"] is True
    assert sent == [detail["run_id"]]
    # Firing the same slot again (a beat adopting an unfinished firing) records nothing new.
    assert actions(SCHEDULE, NOW) == {"run_id": detail["run_id"], "created": False}
    engine = Engine(
        ledger=ledger,
        catalog=catalog,
        model=model,
        config=EngineConfig(worker_id="w-digest", default_model="claude-sonnet-5-5"),
    )

    async def process() -> Any:
        try:
            return await engine.process(detail["run_id"])
        finally:
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()  # the SDK's client lives on this loop

    outcome = asyncio.run(process())
    assert outcome.status == "succeeded"
    [result] = ledger.results([detail["run_id"]])
    return result


def deliver(ledger: Ledger, clock: ManualClock, catalog: Catalog) -> None:
    deliverer = Deliverer(DeliveryLedger(ledger.engine, now=clock), Settings(), worker_id="w-d")
    outcomes = deliverer.deliver_due()
    assert [o.status for o in outcomes] == ["delivered"]


def listed(tool_result_text: str) -> set[str]:
    return {
        part.split(" · ")[0]
        for part in tool_result_text.split("conversation ")[1:]
        if " · tenant" in part
    }


@pytest.mark.usefixtures("stored")
def test_a_scheduled_daily_digest_reads_its_window_and_tenant_and_is_delivered(
    ledger: Ledger, clock: ManualClock, catalog: Catalog, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def record_after_reading(request: ModelRequest) -> ModelTurn:
        result = request.messages[-1]["content"][0]
        seen["results"] = result["content"]
        return reply(tool_call("record_digest", {"value": DIGEST, "evidence_turns": []}))

    def read_conversation(request: ModelRequest) -> ModelTurn:
        seen["conversation"] = request.messages[-1]["content"][0]["content"]
        return reply(tool_call("get_conversation", {"conversation_id": "c-globex"}))

    def note_refusal(request: ModelRequest) -> ModelTurn:
        seen["other_tenant"] = request.messages[-1]["content"][0]
        return reply(text("Recorded the digest."))

    model = ScriptedModel(
        [
            reply(tool_call("query_results", {"analyzer": "follow_ups", "field": "follow_up"})),
            record_after_reading,
            reply(tool_call("get_conversation", {"conversation_id": "c-1"})),
            read_conversation,
            note_refusal,
        ]
    )
    result = fire_and_process(ledger, catalog, model)

    assert listed(seen["results"]) == {"c-1", "c-2"}, "acme, in the last 24 hours, with one"
    assert "Help with c-1, please." in seen["conversation"]
    assert seen["other_tenant"]["is_error"] is True, "another tenant's conversation is unseen"
    assert result.status == "succeeded"
    assert result.conversation_id == "standalone:acme_daily_digest:20261120T100000Z"
    assert [item.value for item in result.outputs["digest"]] == [DIGEST]
    assert result.provenance is not None
    assert result.provenance.spec_hash is not None
    deliver(ledger, clock, catalog)
    [line] = (tmp_path / "digests.jsonl").read_text().splitlines()
    assert json.loads(line)["result"]["outputs"]["digest"][0]["value"] == DIGEST


def digest_analyst(body: dict[str, Any]) -> FakeReply:
    """Queries the follow-ups first, then records like the shipped simulated analyst."""
    messages = body.get("messages") or []
    queried = any(
        isinstance(block, dict) and block.get("name") == "query_results"
        for message in messages
        if message.get("role") == "assistant"
        for block in message.get("content") or []
    )
    if not queried:
        return FakeReply(
            [ToolCall("query_results", {"analyzer": "follow_ups", "field": "follow_up"})]
        )
    return simulated_analyst(body)


@pytest.mark.usefixtures("stored")
def test_a_daily_digest_runs_through_the_sdk_against_the_fake_messages_api(
    ledger: Ledger, clock: ManualClock, catalog: Catalog, tmp_path: Path
) -> None:
    api = FakeMessagesAPI(responder=digest_analyst)
    with serve_fake_messages_api(api) as base_url:
        model = build_anthropic_model("simulated", base_url, timeout=30)
        result = fire_and_process(ledger, catalog, model)

    assert result.status == "succeeded", result.error
    [digest] = result.outputs["digest"]
    assert set(digest.value) == {"summary", "counts", "items"}
    second = api.requests[1].body["messages"]
    sent_back = json.dumps(second[-1]["content"])
    assert "c-1" in sent_back
    assert "c-2" in sent_back
    assert "c-globex" not in sent_back
    assert "c-old" not in sent_back
    tools = {tool["name"] for tool in api.requests[0].body["tools"]}
    assert {"query_results", "get_conversation", "record_output"} <= tools
    assert not tools & {"get_turns", "get_events", "search_conversation"}
    deliver(ledger, clock, catalog)
    assert (tmp_path / "digests.jsonl").read_text().count("\n") == 1
