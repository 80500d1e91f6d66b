"""`POSTHOC_RABBITMQ_QUEUE_TYPE=quorum` on a real RabbitMQ: the run queues are declared as quorum
queues, a run goes through, and a retry's countdown (Celery's native delayed delivery, which
quorum queues need) wakes it again."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection

from analyzers.fakes import FakeMessagesAPI, FakeReply, HttpError, serve_fake_messages_api
from tests.integration.conftest import (
    AMQP_URL,
    Broker,
    Fake,
    Fleet,
    PacedAnalyst,
    _check_rabbitmq,
    _delete_queue,
    record_runs,
    send,
    wait_for,
)
from worker.engine.celery_app import create_celery
from worker.ledger import Ledger
from worker.settings import Settings

pytestmark = pytest.mark.integration


class OverloadedThrice(PacedAnalyst):
    """Three 529s (one model call's every attempt: the run is rescheduled), then the analyst."""

    def __init__(self) -> None:
        super().__init__(latency=0.05)
        self._failures = 3
        self._guard = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> FakeReply | HttpError:  # type: ignore[override]
        with self._guard:
            fail, self._failures = self._failures > 0, self._failures - 1
        return HttpError(529) if fail else super().__call__(body)


@pytest.fixture
def broker() -> Iterator[Broker]:
    _check_rabbitmq()
    found = Broker("rabbitmq", AMQP_URL, f"posthoc.test.{uuid.uuid4().hex[:10]}")
    try:
        yield found
    finally:
        _delete_queue(found)
        with Connection(AMQP_URL, connect_timeout=3) as connection:
            takeover_channel: Any = connection.default_channel
            takeover_channel.queue_delete(f"{found.queue}.takeover")


@pytest.fixture
def fake_model() -> Iterator[Fake]:
    analyst = OverloadedThrice()
    with serve_fake_messages_api(FakeMessagesAPI(responder=analyst)) as base_url:
        yield Fake(base_url, analyst)


def test_quorum_run_queues_carry_runs_and_retry_countdowns(
    fleet: Fleet, ledger: Ledger, broker: Broker
) -> None:
    sender = create_celery(
        Settings(broker_url=broker.url, queue=broker.queue, rabbitmq_queue_type="quorum")
    )
    fleet.start("Q", concurrency=2, rabbitmq_queue_type="quorum")
    [run] = record_runs(ledger, 1)
    send(sender, [run.run_id])
    wait_for(
        lambda: ledger.get_run(run.run_id).status == "succeeded",
        timeout=90,
        what="the run to succeed after its retry",
        fleet=fleet,
    )
    outcomes = [attempt.outcome for attempt in ledger.attempts(run.run_id)]
    assert outcomes == ["retry", "succeeded"], fleet.logs()
    sender.close()
    # The queue is a quorum queue: declaring it as classic is refused as inequivalent.
    with Connection(AMQP_URL, connect_timeout=3) as connection:
        channel: Any = connection.default_channel
        with pytest.raises(connection.channel_errors, match="x-queue-type"):
            channel.queue_declare(
                broker.queue,
                durable=True,
                auto_delete=False,
                arguments={"x-queue-type": "classic"},
            )
