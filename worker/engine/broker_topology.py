"""Broker settings derived from posthoc's settings, in one place: what the Celery app configures,
and what the deployment files give the brokers themselves (`posthoc broker-config`).

The deploy/ files are generated from these functions and a test keeps them equal, so a Redis
visibility timeout or a RabbitMQ consumer timeout is never copied by hand and never drifts from
what the code assumes.

Why these values (see also `celery_app.py`): posthoc acknowledges a message when its task starts,
so only messages a worker has fetched and not started yet are unacknowledged. With prefetch one
per free slot they wait at most until a slot frees, that is the longest run; a retry's countdown
message waits up to `retry_max_seconds`. Redis redelivers an unacknowledged message after its
visibility timeout; RabbitMQ closes the channel of a consumer that holds one past
`consumer_timeout`. Both must be above those waits: `visibility_timeout_seconds` is that bound,
and RabbitMQ's timeout is derived from it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from worker.settings import Settings

CONSUMER_TIMEOUT_MARGIN_SECONDS = 300
"""Added to the longest wait: a consumer timeout must never race a message that is on time."""
TAKEOVER_SUFFIX = ".takeover"
DEAD_LETTER_SUFFIX = ".dead-letter"


def is_redis(settings: Settings) -> bool:
    return settings.broker_url.startswith(("redis://", "rediss://"))


def is_amqp(settings: Settings) -> bool:
    return settings.broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))


def run_queues(settings: Settings) -> list[str]:
    """The queues a worker consumes: new runs and takeovers."""
    return [settings.queue, f"{settings.queue}{TAKEOVER_SUFFIX}"]


def redis_transport_options(settings: Settings) -> dict[str, Any]:
    """Kombu's Redis transport options (`broker_transport_options`)."""
    return {"visibility_timeout": settings.visibility_timeout_seconds}


def consumer_timeout_seconds(settings: Settings) -> int:
    """RabbitMQ's `consumer_timeout`: above the longest wait of an unacknowledged message."""
    longest = max(settings.visibility_timeout_seconds, int(settings.retry_max_seconds))
    return longest + CONSUMER_TIMEOUT_MARGIN_SECONDS


def dead_letter_exchange(settings: Settings) -> str:
    return f"{settings.queue}{DEAD_LETTER_SUFFIX}"


def celery_queue_options(settings: Settings) -> dict[str, Any]:
    """Celery settings that declare the run queues on RabbitMQ with the configured type.

    Quorum queues are declared by Celery itself (`x-queue-type` is fixed at declaration, so a
    broker policy cannot set it); they need a topic exchange for Celery's native delayed
    delivery of retry countdowns. Classic queues keep Celery's defaults, so an existing fleet's
    queues are declared exactly as before.
    """
    if not is_amqp(settings) or settings.rabbitmq_queue_type == "classic":
        return {}
    return {
        "task_default_queue_type": "quorum",
        "task_create_missing_queue_type": "quorum",
        "task_default_exchange_type": "topic",
        "task_create_missing_queue_exchange_type": "topic",
    }


def rabbitmq_policy(settings: Settings) -> dict[str, Any]:
    """The policy on the run queues: dead-lettering and the consumer timeout. Policies apply
    to queues that already exist, so they need no re-declaration."""
    pattern = "^(" + "|".join(re.escape(q) for q in run_queues(settings)) + ")$"
    return {
        "name": f"{settings.queue}-policy",
        "vhost": "/",
        "pattern": pattern,
        "apply-to": "queues",
        "priority": 10,
        "definition": {
            "dead-letter-exchange": dead_letter_exchange(settings),
            "consumer-timeout": consumer_timeout_seconds(settings) * 1000,
        },
    }


def rabbitmq_definitions(settings: Settings) -> dict[str, Any]:
    """A RabbitMQ definitions document (`load_definitions`): the dead-letter exchange, the
    queue that keeps dead letters for inspection, and the run queues' policy."""
    dlx = dead_letter_exchange(settings)
    return {
        "exchanges": [
            {
                "name": dlx,
                "vhost": "/",
                "type": "fanout",
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
        ],
        "queues": [
            {
                "name": dlx,
                "vhost": "/",
                "durable": True,
                "auto_delete": False,
                "arguments": {"x-queue-type": settings.rabbitmq_queue_type},
            }
        ],
        "bindings": [
            {
                "source": dlx,
                "vhost": "/",
                "destination": dlx,
                "destination_type": "queue",
                "routing_key": "",
                "arguments": {},
            }
        ],
        "policies": [rabbitmq_policy(settings)],
    }


def rabbitmq_conf(settings: Settings) -> str:
    """The `rabbitmq.conf` lines posthoc needs."""
    return (
        "# Generated by `posthoc broker-config rabbitmq.conf` from posthoc's settings.\n"
        f"consumer_timeout = {consumer_timeout_seconds(settings) * 1000}\n"
        "load_definitions = /etc/rabbitmq/definitions.json\n"
    )


def render(settings: Settings, what: str) -> str:
    """One generated file by name: `rabbitmq.conf`, `definitions.json`, `redis.json`."""
    if what == "rabbitmq.conf":
        return rabbitmq_conf(settings)
    if what == "definitions.json":
        return json.dumps(rabbitmq_definitions(settings), indent=2, sort_keys=True) + "\n"
    if what == "redis.json":
        return json.dumps(redis_transport_options(settings), indent=2, sort_keys=True) + "\n"
    raise ValueError(f"what: one of rabbitmq.conf, definitions.json, redis.json, not {what!r}")


GENERATED_FILES = ("rabbitmq.conf", "definitions.json", "redis.json")
