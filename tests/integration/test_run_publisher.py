"""`RunPublisher`, the intake's batch publisher: what it puts on Redis is the message
`send_task` would put there (Celery's protocol, same queue and routing), and real
`posthoc worker` processes consume and run what it sent, on Redis and RabbitMQ."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from celery import Celery

from tests.integration.conftest import Broker, Fleet, outcomes, record_runs, wait_for
from worker.engine.celery_app import TASK_NAME
from worker.engine.publishing import RunPublisher
from worker.ledger import Ledger

pytestmark = pytest.mark.integration
FINISHED = ("succeeded", "failed", "skipped")


def _normalised(raw: bytes | str) -> dict[str, Any]:
    """A Redis message with what differs per message (ids, tags, the run id) blanked."""
    message: dict[str, Any] = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    message["body"][0] = ["<run>"]
    for name in ("id", "root_id", "argsrepr"):
        message["headers"][name] = f"<{name}>"
    for name in ("correlation_id", "delivery_tag"):
        message["properties"][name] = f"<{name}>"
    return message


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_the_batch_publisher_sends_what_send_task_sends(broker: Broker, sender: Celery) -> None:
    sender.send_task(TASK_NAME, args=["run-by-send-task"], queue=broker.queue)
    RunPublisher(sender)(["run-a", "run-b", "run-c"])
    client = redis.Redis.from_url(broker.url)
    try:
        raw = client.lrange(broker.queue, 0, -1)
    finally:
        client.close()
    assert len(raw) == 4
    # LPUSH: the newest first, so the send_task message is last.
    *published, reference = [_normalised(item) for item in raw]
    assert all(message == reference for message in published)
    runs = sorted(json.loads(base64.b64decode(json.loads(item)["body"]))[0][0] for item in raw)
    assert runs == ["run-a", "run-b", "run-by-send-task", "run-c"]


def test_workers_run_what_the_batch_publisher_sent(
    fleet: Fleet, ledger: Ledger, sender: Celery
) -> None:
    runs = record_runs(ledger, 6)
    ids = [run.run_id for run in runs]
    ledger.mark_enqueued(ids)  # recorded as sent first, as the intake does
    RunPublisher(sender)(ids)
    fleet.start("P", concurrency=3)
    wait_for(
        lambda: all(ledger.get_run(run_id).status in FINISHED for run_id in ids),
        timeout=90,
        what="every published run to finish",
        fleet=fleet,
    )
    for run_id in ids:
        assert ledger.get_run(run_id).status == "succeeded"
        assert outcomes(ledger.attempts(run_id)) == ["succeeded"]
