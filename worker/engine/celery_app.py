"""The Celery app: thin tasks that carry run ids; the ledger does the bookkeeping.

Settings for long analyses (seconds to tens of minutes) on Redis and RabbitMQ:
- Early acknowledgement (`task_acks_late=False`). The message is only a wake-up call: the run
  is durable in the ledger, its lease says who works on it, and the sweeper re-enqueues runs
  whose worker died (lease expired) or whose message was lost. So an analysis running longer
  than Redis's visibility timeout or RabbitMQ's consumer timeout is never redelivered for that
  reason, and a redelivered message is a no-op anyway (the claim fails).
- `worker_prefetch_multiplier=1`: a worker reserves no more messages than it has free slots, so
  reserved-but-unstarted messages stay few (they are the only ones a visibility or consumer
  timeout can touch).
- Redis `visibility_timeout` (`POSTHOC_VISIBILITY_TIMEOUT_SECONDS`, default 1 h) set in all the
  places Celery reads it; RabbitMQ: `broker_channel_error_retry` so a channel closed by the
  consumer timeout reconnects instead of stopping the worker.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from celery import Celery, signals

from worker.settings import Settings

TASK_NAME = "posthoc.run_analysis"
DELIVER_TASK = "posthoc.deliver"
QUEUE = "posthoc.runs"
"""The default queue (`POSTHOC_QUEUE`); an app's own is `app.conf.task_default_queue`."""

_service_lock = threading.Lock()
_service: Any = None


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for `settings` (see the module docstring for why)."""
    transport_options: dict[str, Any] = {}
    if settings.broker_url.startswith(("redis://", "rediss://")):
        transport_options["visibility_timeout"] = settings.visibility_timeout_seconds
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": False,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "broker_channel_error_retry": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "worker_enable_remote_control": False,
        "task_routes": {
            TASK_NAME: {"queue": settings.queue},
            DELIVER_TASK: {"queue": settings.queue},
        },
    }


def create_celery(settings: Settings) -> Celery:
    """A Celery app for `settings` with the run task registered."""
    app = Celery("posthoc")
    app.conf.update(celery_config(settings))
    app.conf.posthoc_settings = settings

    # shared=False: each app (one per settings, several in tests) keeps its own task.
    @app.task(name=TASK_NAME, ignore_result=True, shared=False)
    def run_analysis(run_id: str) -> str:
        """Process one analysis run by id (the ledger holds everything else)."""
        outcome = _get_service(app).process(run_id)
        if outcome.status == "retry":
            # The ledger already says when the run may go again; this message is the wake-up
            # for then. Should it be lost, the sweeper re-enqueues the run.
            app.send_task(
                TASK_NAME,
                args=[run_id],
                queue=app.conf.task_default_queue,
                countdown=outcome.retry_in,
            )
        if outcome.status in {"succeeded", "failed"}:
            # The outbox rows committed with the result; wake their deliveries now (the
            # delivery sweeper finds them anyway should these messages be lost).
            enqueue_deliveries_with(app)(_get_service(app).pending_deliveries(run_id))
        return str(outcome.status)

    @app.task(name=DELIVER_TASK, ignore_result=True, shared=False)
    def deliver(delivery_id: str) -> str:
        """One attempt of one delivery. A retry is parked in the ledger (`next_attempt_at`),
        never as a broker countdown: the delivery sweeper wakes it when it is due."""
        return str(_get_service(app).deliver(delivery_id).status)

    return app


def enqueue_deliveries_with(app: Celery) -> Any:
    """A function that puts delivery ids on `app`'s queue."""

    queue = app.conf.task_default_queue

    def enqueue(delivery_ids: Sequence[str]) -> None:
        for delivery_id in delivery_ids:
            app.send_task(DELIVER_TASK, args=[delivery_id], queue=queue)

    return enqueue


def enqueue_with(app: Celery) -> Any:
    """A function that puts run ids on `app`'s queue."""

    queue = app.conf.task_default_queue

    def enqueue(run_ids: Sequence[str]) -> None:
        for run_id in run_ids:
            app.send_task(TASK_NAME, args=[run_id], queue=queue)

    return enqueue


def _get_service(app: Celery) -> Any:
    global _service  # noqa: PLW0603 - one service per worker process, built on first use
    with _service_lock:
        if _service is None:
            from worker.engine.service import WorkerService  # noqa: PLC0415 - heavy, only in workers

            _service = WorkerService(app.conf.posthoc_settings, enqueue=enqueue_with(app))
            _service.start_sweeper()
            _service.start_delivery_sweeper(enqueue_deliveries_with(app))
        return _service


@signals.worker_shutdown.connect
def _close_service(**_: Any) -> None:
    global _service  # noqa: PLW0603 - see _get_service
    with _service_lock:
        if _service is not None:
            _service.close()
            _service = None


@signals.worker_ready.connect
def _start_service(sender: Any = None, **_: Any) -> None:
    # Build the service (and its sweeper) as soon as the worker is up, not on the first task:
    # an idle worker must still recover runs whose worker died.
    app = getattr(sender, "app", None)
    if app is not None and getattr(app.conf, "posthoc_settings", None) is not None:
        _get_service(app)
