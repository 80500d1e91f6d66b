"""What the sweeper learns from the broker: messages waiting on the run and takeover queues
(on Redis plus those delivered lately and not acknowledged), and None when it cannot say."""

from __future__ import annotations

import pytest
from celery import Celery

from tests.integration.conftest import Broker, send
from worker.engine.celery_app import create_celery, enqueue_with, queue_depth, takeover_queue
from worker.settings import Settings

pytestmark = pytest.mark.integration


def test_the_depth_counts_both_queues(sender: Celery, broker: Broker) -> None:
    assert queue_depth(sender, 60) == 0  # neither queue exists yet
    send(sender, ["run-1", "run-2", "run-3"])
    enqueue_with(sender, takeover=True)(["run-4"])
    assert queue_depth(sender, 60) == 4
    with sender.connection_for_read() as connection:
        queue = connection.SimpleQueue(takeover_queue(sender))
        message = queue.get(timeout=10)  # delivered, not acknowledged
        held = queue_depth(sender, 60)
        if broker.kind == "redis":
            assert held == 4  # delivered a moment ago: still held by a worker
            assert queue_depth(sender, 0) == 3  # ... but not "within 0 s"
        else:
            assert held == 3  # RabbitMQ reports ready messages only
        message.ack()
        queue.close()
    assert queue_depth(sender, 60) == 3


def test_an_unreachable_broker_gives_no_depth() -> None:
    app = create_celery(Settings(broker_url="redis://127.0.0.1:9/0", queue="posthoc.nowhere"))
    try:
        assert queue_depth(app, 60) is None
    finally:
        app.close()
