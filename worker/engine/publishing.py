"""Sending many run ids to the broker at once, for the HTTP intake's hot path.

`app.send_task` per run routes, builds and publishes one message at a time, each on a producer
taken from the pool and, on Redis, in its own round trip. `RunPublisher` builds each message with
Celery's own protocol builder (`app.amqp.create_task_message`, so what the worker consumes is
exactly what `send_task` would send: the same headers, body and properties, published to the
same queue by the default exchange as Celery does for a direct queue) and publishes a whole batch
through one pooled producer inside kombu's `Producer.batch()`, which pipelines it on Redis: one
round trip per batch. Other transports publish message by message on that one producer.

It only sends. The caller records the sends in the ledger first (with the runs, or
`Ledger.mark_enqueued`), as `enqueue_with` does, so a send that fails leaves runs the sweeper
sends again.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Celery

from worker.engine.celery_app import TASK_NAME
from worker.observability import tracing

BATCH_OPERATIONS = 500
"""Redis commands buffered before kombu flushes the pipeline."""


class RunPublisher:
    """Puts run ids on `app`'s run queue (`queue` to override it); call it with the ids."""

    def __init__(self, app: Celery, queue: str | None = None) -> None:
        self._app = app
        self._queue_name = queue or str(app.conf.task_default_queue)
        self._declared = False
        self._lock = threading.Lock()

    def __call__(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return
        app = self._app
        queue = app.amqp.queues[self._queue_name]
        with app.producer_or_acquire() as producer:
            if not self._declared:
                with self._lock:
                    # Declared once per publisher (the queue, its exchange and binding), as
                    # `send_task` declares it on first use; the consumers declare it too.
                    queue.declare(channel=producer.channel)
                    self._declared = True
            trace = tracing.headers()  # the caller's trace, when tracing is on (as enqueue_with)
            with producer.batch(max_size=BATCH_OPERATIONS):
                for run_id in run_ids:
                    self._publish(producer, queue, run_id, trace)

    def _publish(self, producer: Any, queue: Any, run_id: str, trace: dict[str, str]) -> None:
        task_id = str(uuid.uuid4())
        # The arguments `send_task` passes for a plain call, so the messages are the same.
        headers, properties, body, _ = self._app.amqp.create_task_message(
            task_id,
            TASK_NAME,
            [run_id],
            {},
            root_id=task_id,
            reply_to=self._app.thread_oid,
            ignore_result=None,
            # What Celery's `saferepr` gives for a list of one hex id and no keywords, without
            # its cost (a tenth of publishing): the message stays the same.
            argsrepr=repr([run_id]),
            kwargsrepr="{}",
        )
        headers.update(trace)  # as `send_task(headers=...)` merges custom headers
        producer.publish(
            body,
            exchange="",
            routing_key=self._queue_name,
            serializer=self._app.conf.task_serializer,
            headers=headers,
            delivery_mode=queue.exchange.delivery_mode or 2,
            **properties,
        )
