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
- Two queues: `<queue>` for new runs and retries, `<queue>.takeover` for what the sweeper sends
  again (a dead worker's runs, lost messages). Workers consume both, and kombu alternates
  between them, so a takeover waits for the next free slot, not behind the whole backlog.
- Every send is recorded on the run (`Ledger.mark_enqueued`); the sweeper re-sends only what
  the queues can no longer hold (`queue_depth`, `worker/ledger/sweeping.py`).
- `worker_enable_prefetch_count_reduction=False`. After a reconnect with tasks still running,
  Celery lowers the prefetch count and raises it again from the acknowledgement callback of each
  new task, and on the thread pool that callback runs in a pool thread: it sent `basic.qos` on
  the consumer's AMQP channel while the consumer's own thread did the same, both then waited for
  the one reply, and the consumer hung for good (seen after a RabbitMQ outage with every slot
  busy; a thread dump showed both threads in `basic_qos`). A full window after a reconnect only
  means a few messages reserved early, which the ledger makes harmless.
- `ConsumerWatch` (`worker/engine/liveness.py`) tells whether the consumer consumes, and makes a
  stalled one reconnect.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog
from celery import Celery, signals
from kombu.exceptions import OperationalError as KombuOperationalError

from worker.engine import broker_topology
from worker.engine.collector import tune_for_worker
from worker.engine.liveness import ConsumerWatch, Liveness
from worker.observability import tracing
from worker.observability.logging import say_from_signal_handler
from worker.settings import Settings

log = structlog.get_logger("posthoc.worker")

TASK_NAME = "posthoc.run_analysis"
DELIVER_TASK = "posthoc.deliver"
QUEUE = "posthoc.runs"
"""The default queue (`POSTHOC_QUEUE`); an app's own is `app.conf.task_default_queue`."""

TAKEOVER_SUFFIX = broker_topology.TAKEOVER_SUFFIX
ENQUEUE_CHUNK = 100

_service_lock = threading.Lock()
_service: Any = None


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for `settings` (see the module docstring for why)."""
    transport_options: dict[str, Any] = {}
    if broker_topology.is_redis(settings):
        transport_options.update(broker_topology.redis_transport_options(settings))
    return {
        **broker_topology.celery_queue_options(settings),
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": False,
        "worker_prefetch_multiplier": 1,
        "worker_enable_prefetch_count_reduction": False,  # see the module docstring
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


class EnqueueRecorder(Protocol):
    """What `enqueue_with` records sends in (the ledger)."""

    def mark_enqueued(self, run_ids: Sequence[str]) -> None: ...


def takeover_queue(app: Celery) -> str:
    """The queue the sweeper sends to: consumed beside the main queue, never behind it."""
    return f"{app.conf.task_default_queue}{TAKEOVER_SUFFIX}"


def worker_queues(app: Celery) -> list[str]:
    """The queues a worker consumes: new runs and takeovers."""
    return [app.conf.task_default_queue, takeover_queue(app)]


def create_celery(settings: Settings, *, liveness: Liveness | None = None) -> Celery:
    """A Celery app for `settings` with the run task registered; with `liveness`, its workers
    report whether they consume (and reconnect a stalled consumer)."""
    app = Celery("posthoc")
    app.conf.update(celery_config(settings))
    app.conf.posthoc_settings = settings
    app.conf.posthoc_liveness = liveness
    app.conf.posthoc_stall_seconds = settings.consumer_stall_seconds
    if liveness is not None:
        app.steps["consumer"].add(ConsumerWatch)

    # shared=False: each app (one per settings, several in tests) keeps its own task.
    @app.task(name=TASK_NAME, ignore_result=True, shared=False, bind=True)
    def run_analysis(task: Any, run_id: str) -> str:
        """Process one analysis run by id (the ledger holds everything else)."""
        service = _get_service(app)
        outcome = service.process(run_id, trace=tracing.carrier_of(task.request))
        # The run's outcome is committed in the ledger by now. The messages below are only
        # wake-ups: with the broker down they cannot be sent, and the sweepers send them later,
        # so a failure to send must not fail the task (the run is done either way).

        def wake_later(seconds: float | None) -> None:
            # The ledger already says when the run may go; this message is the wake-up for
            # then. Should it be lost, the sweeper re-enqueues the run.
            app.send_task(
                TASK_NAME, args=[run_id], queue=app.conf.task_default_queue, countdown=seconds
            )
            service.ledger.mark_enqueued([run_id])

        try:
            if outcome.status == "retry":
                wake_later(outcome.retry_in)
            if outcome.status == "released":
                # Handed back by a worker shutting down: wake another one now (the takeover
                # queue is consumed beside the backlog, not behind it).
                enqueue_with(app, service.ledger, takeover=True)([run_id])
            if outcome.status in {"succeeded", "failed"}:
                # The outbox rows committed with the result; wake their deliveries now (marked
                # woken first, in one statement; the delivery sweeper finds them anyway should
                # these messages be lost).
                enqueue_deliveries_with(app, trace=outcome.trace)(
                    service.wake_pending_deliveries(run_id)
                )
            if outcome.status == "noop" and (wait := service.seconds_until_due(run_id)):
                wake_later(wait)  # sent before it was due (a settle delay)
            if outcome.children:
                # Chained runs committed with the result; the sweeper sends them if this fails.
                enqueue_with(app, service.ledger)(list(outcome.children))
        except (KombuOperationalError, OSError) as exc:
            log.warning(
                "run.wakeup_deferred",
                run_id=run_id,
                status=str(outcome.status),
                reason=type(exc).__name__,
            )
        return str(outcome.status)

    @app.task(name=DELIVER_TASK, ignore_result=True, shared=False, bind=True)
    def deliver(task: Any, delivery_id: str) -> str:
        """One attempt of one delivery. A retry is parked in the ledger (`next_attempt_at`),
        never as a broker countdown: the delivery sweeper wakes it when it is due."""
        parent = tracing.carrier_of(task.request)
        with tracing.span("posthoc.delivery", parent=parent, delivery_id=delivery_id) as span:
            outcome = _get_service(app).deliver(delivery_id)
            tracing.set_attributes(span, status=outcome.status, reason=outcome.reason)
        return str(outcome.status)

    return app


class WakeRecorder(Protocol):
    """What `enqueue_deliveries_with` records wake-ups in (the delivery ledger)."""

    def mark_woken(self, ids: Sequence[str]) -> None: ...


def enqueue_deliveries_with(
    app: Celery,
    recorder: WakeRecorder | None = None,
    *,
    trace: Mapping[str, str] | None = None,
) -> Any:
    """A function that puts delivery ids on `app`'s queue, recording each wake-up in
    `recorder` first so the delivery sweeper does not send another while this one waits.
    `trace`: the run's trace headers, so the delivery's span joins the run's trace."""

    queue = app.conf.task_default_queue
    headers = dict(trace or {})

    def enqueue(delivery_ids: Sequence[str]) -> None:
        if recorder is not None:
            recorder.mark_woken(delivery_ids)
        for delivery_id in delivery_ids:
            app.send_task(DELIVER_TASK, args=[delivery_id], queue=queue, headers=headers)

    return enqueue


def enqueue_with(
    app: Celery, recorder: EnqueueRecorder | None = None, *, takeover: bool = False
) -> Callable[[Sequence[str]], None]:
    """A function that puts run ids on `app`'s queue (the takeover queue with `takeover`) and
    records each send in `recorder` (the ledger), so the sweeper knows what was sent when."""

    queue = takeover_queue(app) if takeover else app.conf.task_default_queue

    def enqueue(run_ids: Sequence[str]) -> None:
        # Recorded before sending, a chunk at a time: a sweeper that reads the queue depth
        # meanwhile must not take runs whose message is on its way for lost ones. A send that
        # then fails leaves a run that looks sent; the sweeper sends it after its interval.
        for start in range(0, len(run_ids), ENQUEUE_CHUNK):
            chunk = run_ids[start : start + ENQUEUE_CHUNK]
            if recorder is not None:
                recorder.mark_enqueued(chunk)
            headers = tracing.headers()  # the intake's trace, when tracing is on
            for run_id in chunk:
                app.send_task(TASK_NAME, args=[run_id], queue=queue, headers=headers)

    return enqueue


def queue_depth(app: Celery, held_within_seconds: float) -> int | None:
    """Messages the broker holds for `app`'s run queues: the waiting ones, and on Redis also
    those delivered to a worker within `held_within_seconds` and not acknowledged yet (fetched
    ahead, waiting for a free slot). None when the broker cannot say (unreachable). A queue
    that does not exist yet holds nothing.

    Older unacknowledged deliveries are not counted: they may belong to a worker that was
    killed (Redis would give them back only after the visibility timeout, an hour), so their
    runs must count as lost; a live worker's long-waiting one is then sent once more, and the
    duplicate is a no-op.
    """
    queues = worker_queues(app)
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
            channel: Any = connection.default_channel
            total = _redis_recently_delivered(channel, set(queues), held_within_seconds)
            for queue in queues:
                try:
                    total += int(channel.queue_declare(queue=queue, passive=True).message_count)
                except connection.channel_errors:
                    channel = connection.channel()  # AMQP closes a channel on NOT_FOUND
            return total
    except Exception as error:  # any broker failure means "cannot say"
        log.warning("queue_depth.unknown", error_type=type(error).__name__)
        return None


def _redis_recently_delivered(channel: Any, queues: set[str], within_seconds: float) -> int:
    """Kombu's Redis transport keeps delivered, unacknowledged messages in a hash (value:
    `[message, exchange, routing_key]`) indexed by delivery time; count ours delivered within
    `within_seconds`. Other transports: 0 (RabbitMQ keeps a worker's few prefetched messages
    out of the depth, and the sweeper tolerates that: one duplicate, a no-op)."""
    client = getattr(channel, "client", None)
    unacked_key = getattr(channel, "unacked_key", None)
    index_key = getattr(channel, "unacked_index_key", None)
    if client is None or unacked_key is None or index_key is None:
        return 0
    tags = client.zrangebyscore(index_key, time.time() - within_seconds, "+inf")
    count = 0
    for payload in client.hmget(unacked_key, tags) if tags else []:
        try:
            _, exchange, routing_key = json.loads(payload)
        except (ValueError, TypeError):
            continue
        count += exchange in queues or routing_key in queues
    return count


def _get_service(app: Celery) -> Any:
    global _service  # noqa: PLW0603 - one service per worker process, built on first use
    with _service_lock:
        if _service is None:
            from worker.engine.service import WorkerService  # noqa: PLC0415 - heavy, only in workers

            liveness: Liveness | None = app.conf.get("posthoc_liveness")

            def measured_depth() -> int | None:
                depth = queue_depth(app, app.conf.posthoc_settings.stale_queued_seconds)
                if liveness is not None:  # the consumer's stall check reads it
                    liveness.note_broker_depth(depth)
                return depth

            _service = WorkerService(app.conf.posthoc_settings, queue_depth=measured_depth)
            _service.enqueue = enqueue_with(app, _service.ledger, takeover=True)
            _service.start_sweeper()
            _service.start_delivery_sweeper(enqueue_deliveries_with(app, _service.deliverer.store))
            tune_for_worker()  # the long-lived objects exist now: freeze them
        return _service


@signals.setup_logging.connect
def _keep_posthoc_logging(**_: Any) -> None:
    """posthoc configured logging already (`worker/observability/logging.py`); a receiver here
    makes Celery add no handler or formatter of its own (its task logger's would write plain
    lines beside the JSON ones). Its shutdown notices, printed from signal handlers, go through
    a lock-free writer that renders them like every other line."""
    import celery.apps.worker as celery_worker  # noqa: PLC0415 - only a worker process needs it

    celery_worker.safe_say = _say  # type: ignore[attr-defined]  # untyped in celery-types


def _say(message: str, *_: Any) -> None:
    say_from_signal_handler(message, logger="celery.apps.worker")


@signals.worker_shutdown.connect
def _close_service(**_: Any) -> None:
    global _service  # noqa: PLW0603 - see _get_service
    with _service_lock:
        if _service is not None:
            _service.close()
            _service = None


@signals.worker_shutting_down.connect
def _drain_service(**_: Any) -> None:
    # A warm shutdown (SIGTERM): analyses get `shutdown_drain_seconds` to finish, then are
    # handed back; Celery meanwhile waits for its pool threads, which end with them. Runs in
    # the signal handler: no lock (the main thread may hold it), one atomic read instead.
    service = _service
    if service is not None:
        service.begin_shutdown(service.settings.shutdown_drain_seconds)


@signals.worker_ready.connect
def _start_service(sender: Any = None, **_: Any) -> None:
    # Build the service (and its sweeper) as soon as the worker is up, not on the first task:
    # an idle worker must still recover runs whose worker died.
    app = getattr(sender, "app", None)
    if app is not None and getattr(app.conf, "posthoc_settings", None) is not None:
        _get_service(app)
