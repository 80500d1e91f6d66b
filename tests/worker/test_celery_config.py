"""The Celery configuration for long analyses (seconds to tens of minutes) on Redis, RabbitMQ and
the embedded queue. Each test's docstring says why the value is what it is."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from worker.engine.celery_app import (
    DELIVER_TASK,
    QUEUE,
    TASK_NAME,
    celery_config,
    create_celery,
    enqueue_with,
)
from worker.settings import Settings

REDIS = "redis://127.0.0.1:6379/0"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"
EMBEDDED = "sqla+sqlite:///posthoc-data/broker.sqlite3"


def config(broker_url: str, **settings: Any) -> dict[str, Any]:
    return celery_config(Settings(broker_url=broker_url, **settings))


@pytest.mark.parametrize("broker_url", [REDIS, AMQP, EMBEDDED])
def test_messages_are_acknowledged_early(broker_url: str) -> None:
    """Early ack (`task_acks_late=False`): the message is only a wake-up call for a run the
    ledger holds durably, under a lease, with a sweeper that re-enqueues runs whose worker died.
    Acking when the task starts means a run longer than Redis's visibility timeout or
    RabbitMQ's consumer timeout is never redelivered for that reason (late acks would hand it to
    a second worker while the first still runs, or get the channel closed), and the ledger, not
    the broker, is what survives a SIGKILL."""
    assert config(broker_url)["task_acks_late"] is False


@pytest.mark.parametrize("broker_url", [REDIS, AMQP, EMBEDDED])
def test_a_worker_reserves_at_most_one_message_per_free_slot(broker_url: str) -> None:
    """`worker_prefetch_multiplier=1`: reserved-but-unstarted messages are the only ones a
    visibility or consumer timeout can still touch (and the only ones a killed worker takes
    with it until they come back), so there should be as few as possible; with long tasks a
    larger multiplier also starves idle workers while one worker sits on a backlog."""
    assert config(broker_url)["worker_prefetch_multiplier"] == 1


@pytest.mark.parametrize("broker_url", [REDIS, AMQP, EMBEDDED])
def test_no_prefetch_reduction_after_a_reconnect(broker_url: str) -> None:
    """Celery's prefetch-count reduction raises the count again from each new task's ack
    callback, which on the thread pool runs in a pool thread: it sent `basic.qos` on the
    consumer's channel while the consumer thread did too, and both hung waiting for one reply
    (a RabbitMQ outage with every slot busy; `tests/integration/test_broker_outages.py`)."""
    assert config(broker_url)["worker_enable_prefetch_count_reduction"] is False


def test_redis_gets_the_configured_visibility_timeout() -> None:
    """Redis redelivers a fetched, unacked message after `visibility_timeout`, and the shortest
    value of every app on the broker wins; the default (1 h) is kept explicit and configurable
    (`POSTHOC_VISIBILITY_TIMEOUT_SECONDS`) so it can be raised above the longest time a message
    can sit reserved in a worker, and matched across apps sharing the broker."""
    assert config(REDIS)["broker_transport_options"] == {"visibility_timeout": 3600}
    assert config(REDIS, visibility_timeout_seconds=7200)["broker_transport_options"] == {
        "visibility_timeout": 7200
    }
    assert config("rediss://cache.internal:6380/1")["broker_transport_options"] == {
        "visibility_timeout": 3600
    }


@pytest.mark.parametrize("broker_url", [AMQP, EMBEDDED])
def test_other_brokers_get_no_visibility_timeout(broker_url: str) -> None:
    """The option means nothing to RabbitMQ (unacked messages come back when the channel
    closes) or to the embedded queue; setting it there would only mislead a reader."""
    assert "visibility_timeout" not in config(broker_url)["broker_transport_options"]


@pytest.mark.parametrize("broker_url", [REDIS, AMQP, EMBEDDED])
def test_channel_errors_reconnect_instead_of_stopping_the_worker(broker_url: str) -> None:
    """`broker_channel_error_retry=True`: RabbitMQ closes the whole channel with
    PRECONDITION_FAILED when a delivery stays unacked past its consumer timeout, and Celery by
    default treats that channel error as unrecoverable and exits. Retrying it like a connection
    error keeps the worker (and its in-flight analyses' leases) alive; connecting at startup is
    retried for the same reason (`broker_connection_retry_on_startup`)."""
    settings = config(broker_url)
    assert settings["broker_channel_error_retry"] is True
    assert settings["broker_connection_retry_on_startup"] is True


def test_tasks_keep_no_results_and_speak_json_only() -> None:
    """The ledger stores results; a Celery result backend would be a second, unread copy. JSON
    only: a run id is a string, and pickle from a broker is code execution."""
    settings = config(REDIS)
    assert settings["result_backend"] is None
    assert settings["task_ignore_result"] is True
    assert (settings["task_serializer"], settings["accept_content"]) == ("json", ["json"])


def test_run_ids_travel_on_the_configured_queue() -> None:
    """One queue per fleet (`POSTHOC_QUEUE`), so fleets, or test runs, can share a broker."""
    assert config(REDIS)["task_default_queue"] == QUEUE == "posthoc.runs"
    custom = config(REDIS, queue="posthoc.runs.eu")
    assert custom["task_default_queue"] == "posthoc.runs.eu"
    # Deliveries travel on the fleet's queue too.
    assert custom["task_routes"] == {
        TASK_NAME: {"queue": "posthoc.runs.eu"},
        DELIVER_TASK: {"queue": "posthoc.runs.eu"},
    }


@pytest.mark.parametrize("name", ["", "a,b", "runs with spaces"])
def test_a_queue_name_the_worker_command_line_would_split_is_refused(name: str) -> None:
    """`posthoc worker` passes the name to Celery's `--queues`, which splits on commas."""
    with pytest.raises(ValidationError, match="queue"):
        Settings(queue=name)


def test_the_app_registers_the_task_and_enqueues_on_its_queue() -> None:
    """Sending does not need a worker: the message goes to the app's own queue."""
    app = create_celery(Settings(broker_url="memory://", queue="posthoc.test"))
    assert TASK_NAME in app.tasks
    with app.connection_for_write() as connection:
        queue = connection.SimpleQueue("posthoc.test")
        try:
            enqueue_with(app)(["run-1", "run-2"])
            messages = [queue.get(timeout=1) for _ in range(2)]
            assert [m.headers["task"] for m in messages] == [TASK_NAME, TASK_NAME]
            assert [m.payload[0] for m in messages] == [["run-1"], ["run-2"]]
            for message in messages:
                message.ack()
        finally:
            queue.close()
