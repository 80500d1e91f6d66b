"""`procedure_capture` runs through the worker engine into the ledger's procedure store: one
pending candidate per task, support counted once per conversation even when the worker dies
between storing the candidate and completing the run, and the review asked for once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from analyzers.testing import Script, ScriptedModel, reply, text, tool_call
from schemas import Conversation
from tests.procedures.test_capture import onboarding
from worker.catalog import Catalog
from worker.engine.learning import review_requester
from worker.engine.runner import Engine, EngineConfig
from worker.ledger import Ledger, ManualClock, RunPlan
from worker.settings import Settings
from worker.sinks.fake_slack import FakeSlack, serve_fake_slack
from worker.sinks.procedure_review import ACTION_APPROVE, ACTION_REJECT

LEASE_SECONDS = 30.0
WORDS: dict[str, Any] = {
    "name": "vendor_onboarding",
    "trigger_description": "When an employee asks to onboard a new vendor.",
    "patterns": ["onboard * vendor"],
    "instructions": [{"step": "1", "instruction": "Look the vendor up by name."}],
}


def words() -> list[Script]:
    return [
        reply(
            tool_call(
                "record_output",
                {"output": "procedure_candidate", "value": WORDS, "evidence_turns": [0]},
            )
        ),
        reply(text("Recorded.")),
    ]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def engine(ledger: Ledger, catalog: Catalog, model: Any, reviews: list[str]) -> Engine:
    return Engine(
        ledger=ledger,
        catalog=catalog,
        model=model,
        config=EngineConfig(
            worker_id="host:1", default_model="claude-sonnet-5-5", lease_seconds=LEASE_SECONDS
        ),
        jitter=lambda: 0.0,
        request_reviews=reviews.append,
    )


def queue_capture(ledger: Ledger, conversation: Conversation) -> str:
    ref = ledger.save_conversation(conversation)
    [run] = ledger.record_runs(
        ref.pk, [RunPlan("procedure_capture", "1.0.0", max_attempts=3)], trigger="webhook"
    )
    return run.id


def test_three_captures_make_one_pending_candidate_reviewed_once(
    ledger: Ledger, catalog: Catalog
) -> None:
    reviews: list[str] = []
    model = ScriptedModel([*words(), *words(), *words()])
    worker = engine(ledger, catalog, model, reviews)
    for number in range(3):
        run_id = queue_capture(ledger, onboarding(number))
        assert asyncio.run(worker.process(run_id)).status == "succeeded"
    rows = ledger.procedures.list(tenant_id="globex")
    assert [(row.name, row.status) for row in rows] == [("vendor_onboarding", "pending")]
    assert rows[0].support == ("conv-0", "conv-1", "conv-2")
    assert reviews == ["globex"]  # asked when the candidate was created, not for support


def test_a_worker_killed_between_storing_and_completing_counts_the_conversation_once(
    ledger: Ledger, catalog: Catalog, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    reviews: list[str] = []
    model = ScriptedModel([*words(), *words()])
    worker = engine(ledger, catalog, model, reviews)
    run_id = queue_capture(ledger, onboarding(0))
    real_complete = ledger.complete

    def die(*args: Any, **kwargs: Any) -> bool:
        raise SystemExit("killed after the candidate was stored")

    monkeypatch.setattr(ledger, "complete", die)
    with pytest.raises(SystemExit):
        asyncio.run(worker.process(run_id))
    [stored] = ledger.procedures.list(tenant_id="globex")
    assert stored.support == ("conv-0",)

    monkeypatch.setattr(ledger, "complete", real_complete)
    clock.advance(LEASE_SECONDS + 1)  # the dead worker's lease runs out; the run is retried
    assert asyncio.run(worker.process(run_id)).status == "succeeded"
    [again] = ledger.procedures.list(tenant_id="globex")
    assert again.id == stored.id
    assert again.support == ("conv-0",)
    assert again.status == "pending"


def test_the_candidate_review_reaches_slack_once_with_its_buttons(
    ledger: Ledger, catalog: Catalog
) -> None:
    fake = FakeSlack(token="xoxb-review")
    with serve_fake_slack(fake) as base_url:
        settings = Settings(
            slack_bot_token="xoxb-review",
            slack_api_url=base_url,
            procedure_review_channel="#procedure-review",
        )
        request = review_requester(settings, ledger)
        assert request is not None
        model = ScriptedModel([*words(), *words()])
        worker = Engine(
            ledger=ledger,
            catalog=catalog,
            model=model,
            config=EngineConfig(worker_id="host:1", default_model="claude-sonnet-5-5"),
            request_reviews=request,
        )
        for number in range(2):
            run_id = queue_capture(ledger, onboarding(number))
            assert asyncio.run(worker.process(run_id)).status == "succeeded"
    [message] = fake.messages("#procedure-review")
    text = json.dumps(message.blocks)
    assert "Procedure to review: vendor_onboarding v1" in text
    assert ACTION_APPROVE in text
    assert ACTION_REJECT in text


def test_no_review_requester_without_slack_settings(ledger: Ledger) -> None:
    unset = Settings(slack_bot_token=None, procedure_review_channel=None)
    assert review_requester(unset, ledger) is None
    no_channel = Settings(slack_bot_token="xoxb-review", procedure_review_channel=None)
    assert review_requester(no_channel, ledger) is None
