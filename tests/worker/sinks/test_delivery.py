"""Deliveries end to end: outbox rows from completed runs, delivered by the `Deliverer` through
the real `slack_sdk` to the fake Slack and through HTTP to a verifying webhook receiver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.analyzer import JsonlSink, SinkRoute, SlackSink, WebhookSink
from schemas.result import AnalysisResult
from tests.worker.sinks import results
from tests.worker.sinks.receiver import Receiver, serve_receiver
from worker.catalog import Catalog
from worker.ledger import Ledger, ManualClock, RunPlan
from worker.ledger import deliveries as outbox
from worker.ledger.deliveries import DeliveryLedger
from worker.settings import Settings
from worker.sinks.delivery import Deliverer, routes_from_catalog
from worker.sinks.fake_slack import (
    AcceptThenDrop,
    FakeSlack,
    RateLimited,
    ServerError,
    serve_fake_slack,
)

TOKEN = "xoxb-test"
HIGH = 'outputs.follow_up.exists(f, f.value.priority in ["urgent", "high"])'
OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


@dataclass
class World:
    ledger: Ledger
    clock: ManualClock
    slack: FakeSlack
    deliverer: Deliverer
    routes: list[SinkRoute]

    def complete(self, result: AnalysisResult) -> str:
        ref = self.ledger.save_conversation(results.conversation())
        [run] = self.ledger.record_runs(ref.pk, [RunPlan(result.analyzer, "1.0.0")], trigger="cli")
        assert self.ledger.claim(run.id, "w", 60) is not None
        assert self.ledger.complete(run.id, "w", result.model_copy(update={"run_id": run.id}))
        return run.id

    def deliveries(self, run_id: str) -> dict[str, outbox.DeliveryRecord]:
        with self.deliverer.store.read() as connection:
            rows = outbox.list_deliveries(connection, run_id=run_id)
        return {r.destination: r for r in rows}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = ManualClock(datetime.now(UTC))
    slack = FakeSlack(token=TOKEN)
    routes: list[SinkRoute] = [
        SlackSink(type="slack", channel="#escalations", when=HIGH, mention=["S0614TZR7"]),
        SlackSink(type="slack", channel="#cx-digest", when=f"!({HIGH})"),
    ]
    outbox.use_routes(lambda _name: (routes, ["follow_up"]))
    with serve_fake_slack(slack) as base_url:
        ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}", now=clock)
        ledger.migrate()
        settings = Settings(
            slack_bot_token=TOKEN,
            slack_api_url=base_url,
            conversation_url_template="https://cx.example.com/{tenant_id}/{conversation_id}",
        )
        deliverer = Deliverer(
            DeliveryLedger(ledger.engine, now=clock),
            settings,
            worker_id="w-deliver",
            secrets={"HOOK": f"{OLD} {NEW}"},
        )
        try:
            yield World(ledger, clock, slack, deliverer, routes)
        finally:
            ledger.dispose()
            outbox.use_routes(None)


def test_the_builtin_follow_ups_route_by_priority_to_the_right_channels(world: World) -> None:
    catalog = Catalog.load([], [], builtins=True)
    outbox.use_routes(routes_from_catalog(catalog))
    high = world.complete(results.follow_ups("high", run_id="x"))
    normal = world.complete(results.follow_ups("normal", run_id="y"))
    outcomes = world.deliverer.deliver_due()
    assert {o.status for o in outcomes} == {"delivered"}
    assert set(world.deliveries(high)) == {"#escalations"}
    assert set(world.deliveries(normal)) == {"#cx-digest"}
    assert list(world.slack.delivered("#escalations")) == [
        world.deliveries(high)["#escalations"].id
    ]
    assert list(world.slack.delivered("#cx-digest")) == [world.deliveries(normal)["#cx-digest"].id]
    [escalation] = world.slack.messages("#escalations")
    assert "https://cx.example.com/acme/c-123" in json.dumps(escalation.blocks)
    failed = world.complete(results.failed())
    world.deliverer.deliver_due()
    assert set(world.deliveries(failed)) == {"#cx-digest"}
    assert len(world.slack.messages("#cx-digest")) == 2


def test_mentions_reach_the_message(world: World) -> None:
    world.complete(results.follow_ups("high"))
    world.deliverer.deliver_due()
    [escalation] = world.slack.messages("#escalations")
    assert "<!subteam^S0614TZR7>" in json.dumps(escalation.blocks)


def test_a_429_is_honoured_before_the_next_attempt(world: World) -> None:
    run_id = world.complete(results.follow_ups("urgent"))
    world.slack.fail_next("chat.postMessage", RateLimited(retry_after=30))
    [first] = world.deliverer.deliver_due()
    assert first.status == "pending"
    assert first.retry_in is not None
    assert first.retry_in >= 30
    world.clock.advance(29)
    assert world.deliverer.deliver_due() == []  # parked in the ledger, not due yet
    world.clock.advance(first.retry_in)
    [second] = world.deliverer.deliver_due()
    assert second.status == "delivered"
    assert len(world.slack.messages("#escalations")) == 1
    assert world.deliveries(run_id)["#escalations"].attempts == 2


def test_a_lost_answer_and_a_failed_lookup_still_give_one_message(world: World) -> None:
    world.complete(results.follow_ups("urgent"))
    world.slack.fail_next("chat.postMessage", AcceptThenDrop())
    world.slack.fail_next("conversations.list", ServerError())
    [first] = world.deliverer.deliver_due()
    assert first.status == "pending"
    world.clock.advance(first.retry_in or 0)
    [second] = world.deliverer.deliver_due()
    assert second.status == "delivered"
    [message] = world.slack.messages("#escalations")
    assert message.edits == 1  # found by its metadata and updated, not posted again
    assert world.slack.duplicates() == 0


def test_a_replayed_delivery_updates_its_message(world: World) -> None:
    run_id = world.complete(results.follow_ups("high"))
    world.deliverer.deliver_due()
    delivery = world.deliveries(run_id)["#escalations"]
    with world.deliverer.store.write() as connection:
        assert outbox.replay(connection, world.clock(), [delivery.id]) == [delivery.id]
    [again] = world.deliverer.deliver_due()
    assert again.status == "delivered"
    [message] = world.slack.messages("#escalations")
    assert message.edits == 1
    assert world.slack.count("chat.postMessage") == 1


def test_a_refused_post_is_dead_lettered_with_the_reason(world: World) -> None:
    run_id = world.complete(results.follow_ups("high"))
    world.deliverer.settings = world.deliverer.settings.model_copy(update={"slack_bot_token": None})
    [outcome] = world.deliverer.deliver_due()
    assert outcome.status == "dead"
    record = world.deliveries(run_id)["#escalations"]
    assert record.dead_reason == "slack_token_missing"
    assert record.last_error == "POSTHOC_SLACK_BOT_TOKEN is not set"


def test_failed_runs_reach_slack_too(world: World) -> None:
    world.routes.append(SlackSink(type="slack", channel="#failures", when='status == "failed"'))
    world.complete(results.failed())
    world.deliverer.deliver_due()
    [message] = world.slack.messages("#failures")
    assert "deadline_exceeded" in message.text


def test_webhooks_are_signed_across_a_rotation_and_410_disables(world: World) -> None:
    receiver = Receiver(secrets=[NEW])
    with serve_receiver(receiver) as url:
        world.routes[:] = [
            WebhookSink(
                type="webhook",
                url=url,
                secret="{{secrets.HOOK}}",
                mapping={"run": "{{data.run_id}}", "kind": "{{type}}"},
            )
        ]
        first = world.complete(results.follow_ups("high"))
        [outcome] = world.deliverer.deliver_due()
        assert outcome.status == "delivered"
        assert receiver.payloads() == [{"run": first, "kind": "analysis.succeeded"}]
        assert receiver.accepted == {world.deliveries(first)[url].id: 1}
        receiver.answer = lambda _n: (410, {})
        world.complete(results.follow_ups("normal"))
        [gone] = world.deliverer.deliver_due()
        assert gone.status == "dead"
        assert gone.reason == "gone"
        third = world.complete(results.follow_ups("urgent"))
        assert world.deliveries(third)[url].dead_reason == "destination_disabled"
    assert receiver.bad_signatures == 0


def test_jsonl_gets_one_line_per_delivery(world: World, tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    world.routes[:] = [JsonlSink(type="jsonl", path=str(path))]
    run_id = world.complete(results.quality())
    world.deliverer.deliver_due()
    [line] = path.read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert record["result"]["run_id"] == run_id
    assert record["delivery_id"] == world.deliveries(run_id)[str(path)].id
