"""One worker process's resources: the ledger, the model, the engine, and the event loop that
runs many analyses at once.

Celery's thread pool hands each task to a thread; the thread submits the analysis to this
process's single asyncio loop and waits. So hundreds of analyses can be in flight, all waiting on
HTTP, without hundreds of event loops or processes. The sweeper runs on the same loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import structlog
import uvloop

from analyzers.model.protocol import ModelClient
from worker.catalog import Catalog
from worker.engine.learning import review_requester
from worker.engine.metered_model import MeteredModel
from worker.engine.ratelimit import LocalLimiter, RateLimitedModel, RedisLimiter
from worker.engine.runner import Engine, EngineConfig, ProcessOutcome
from worker.http_transport import HttpxTransport
from worker.ledger import Ledger
from worker.ledger.deliveries import DeliveryLedger, use_routes
from worker.ledger.deliveries import due as due_deliveries
from worker.ledger.engine import DEFAULT_POOL_SIZE
from worker.observability import metrics
from worker.settings import Settings, tool_secrets
from worker.sinks.delivery import (
    Deliverer,
    DeliveryOutcome,
    routes_from_catalog,
)

log = structlog.get_logger("posthoc.worker")
T = TypeVar("T")
IO_THREADS = DEFAULT_POOL_SIZE
"""Threads for blocking calls (the ledger's): one pooled database connection each."""
Enqueue = Callable[[Sequence[str]], None]


class LoopThread:
    """An asyncio loop running in a daemon thread, accepting coroutines from other threads."""

    def __init__(self, name: str = "posthoc-loop", io_threads: int = IO_THREADS) -> None:
        # uvloop's loop: its scheduling, timers and socket transports run in C, and at
        # hundreds of streams in flight the loop's own work was a sixth of the process's CPU.
        self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        # Ledger calls run in threads (`asyncio.to_thread`); the default pool (cores + 4) makes
        # hundreds of in-flight analyses queue for it at every claim and completion.
        self.loop.set_default_executor(
            ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix=f"{name}-io")
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule `coroutine` on the loop; wait on the returned future from any thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def stop(self) -> None:
        """Stop the loop and wait for its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def worker_identity() -> str:
    """Host and process: what a lease owner is called in the ledger."""
    return f"{socket.gethostname()}:{os.getpid()}"


def build_model(settings: Settings) -> ModelClient:
    """The Anthropic adapter, behind the fleet-wide rate limit when one is configured, timed
    for the model latency histogram."""
    from analyzers.model.anthropic import build_anthropic_model  # noqa: PLC0415 - heavy SDK import

    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
    model: ModelClient = build_anthropic_model(
        api_key=key,
        base_url=settings.anthropic_base_url,
        http_client=settings.model_http_client,
        on_retry=metrics.model_retry,
    )
    if settings.requests_per_minute is None and settings.tokens_per_minute is None:
        return MeteredModel(model)
    redis_url = settings.rate_limit_redis_url
    if redis_url is not None:
        import redis.asyncio as redis_asyncio  # noqa: PLC0415 - only fleets with Redis need it

        client = redis_asyncio.Redis.from_url(redis_url)
        limiter: Any = RedisLimiter(
            client, settings.requests_per_minute, settings.tokens_per_minute
        )
    else:
        limiter = LocalLimiter(settings.requests_per_minute, settings.tokens_per_minute)
    return MeteredModel(RateLimitedModel(model, limiter))


class WorkerService:
    """Everything one process needs to turn run ids into results."""

    def __init__(
        self,
        settings: Settings,
        *,
        model: ModelClient | None = None,
        catalog: Catalog | None = None,
        enqueue: Enqueue | None = None,
        queue_depth: Callable[[], int | None] | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = Ledger.from_url(settings.database_url, pool_size=IO_THREADS)
        self.ledger.migrate()
        self.catalog = catalog or Catalog.load(
            settings.analyzer_dirs, settings.procedure_dirs, builtins=settings.builtin_analyzers
        )
        self.loop = LoopThread()
        self.enqueue = enqueue
        self.queue_depth = queue_depth
        self.http = HttpxTransport()
        self.engine = Engine(
            ledger=self.ledger,
            catalog=self.catalog,
            model=model or build_model(settings),
            config=EngineConfig.from_settings(settings, worker_identity()),
            http=self.http,
            secrets=tool_secrets(),
            request_reviews=review_requester(settings, self.ledger),
        )
        self._sweeper: Future[None] | None = None
        # Deliveries: routes come from this catalog (see deliveries.routes_for_run).
        use_routes(routes_from_catalog(self.catalog))
        self.deliverer = Deliverer(
            DeliveryLedger(self.ledger.engine),
            settings,
            worker_id=worker_identity(),
            secrets=tool_secrets(),
        )
        self.enqueue_deliveries: Enqueue | None = None
        self._delivery_sweeper: Future[None] | None = None

    def process(self, run_id: str, trace: Mapping[str, str] | None = None) -> ProcessOutcome:
        """Process one run id, blocking the calling thread (a Celery pool thread); `trace`: the
        message's trace headers, continued by the run's span."""
        return self.loop.submit(self.engine.process(run_id, trace=trace)).result()

    def seconds_until_due(self, run_id: str) -> float | None:
        """How long a queued run still waits (a settle delay, a retry backoff); None when it
        is not queued for later."""
        run = self.ledger.get_run(run_id)
        if run.status != "queued":
            return None
        wait = (run.available_at - self.ledger.clock()).total_seconds()
        return wait if wait > 0 else None

    def start_sweeper(self) -> None:
        """Re-enqueue, every `sweep_interval_seconds`, runs whose lease expired or whose queue
        message seems lost. Every worker may run one: a duplicate message is a no-op."""
        if self.enqueue is not None and self._sweeper is None:
            self._sweeper = self.loop.submit(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_seconds)
            try:
                await asyncio.to_thread(self.sweep_once)
            except Exception:
                log.exception("sweep.failed")

    def sweep_once(self) -> list[str]:
        """One sweep: fail exhausted runs, re-enqueue the rest; returns the re-enqueued ids.

        With a `queue_depth`, queued runs are re-sent only when the queues cannot hold their
        message any more; when the broker cannot say (an outage), only takeovers are sent.
        """
        waiting = self.queue_depth() if self.queue_depth is not None else None
        report = self.ledger.sweep(
            older_than_seconds=self.settings.stale_queued_seconds,
            waiting_messages=waiting,
            resend_queued=self.queue_depth is None or waiting is not None,
        )
        if waiting is not None:
            metrics.QUEUE_DEPTH.set(waiting)
        metrics.OLDEST_WAITING.set(self.ledger.oldest_waiting_seconds())
        metrics.LEASES_RECLAIMED.inc(report.reclaimed)
        if report.to_enqueue and self.enqueue is not None:
            self.enqueue(report.to_enqueue)
        if report.to_enqueue or report.exhausted:
            log.info(
                "sweep.done",
                requeued=len(report.to_enqueue),
                exhausted=len(report.exhausted),
                waiting_messages=waiting,
            )
        return report.to_enqueue

    def begin_shutdown(self, drain_seconds: float) -> None:
        """The worker was asked to stop (SIGTERM): let the analyses in flight finish for up to
        `drain_seconds`, then hand back the ones still running, so none stays leased after the
        process exits. Returns at once; Celery waits for its pool threads meanwhile."""
        self.loop.submit(self._drain(drain_seconds))

    async def _drain(self, drain_seconds: float) -> None:
        deadline = time.monotonic() + drain_seconds
        log.info("worker.draining", in_flight=self.engine.in_flight, drain_s=drain_seconds)
        while self.engine.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        released = self.engine.release_all()
        if released:
            log.warning("worker.releasing", runs=released)

    def deliver(self, delivery_id: str) -> DeliveryOutcome:
        """One delivery attempt (a Celery pool thread); a retry is parked in the ledger."""
        return self.deliverer.deliver(delivery_id)

    def wake_pending_deliveries(self, run_id: str) -> list[str]:
        """The run's pending deliveries, marked woken (the caller sends their messages)."""
        return self.deliverer.store.wake_pending(run_id)

    def start_delivery_sweeper(self, enqueue: Enqueue) -> None:
        """Every `delivery_sweep_seconds`, enqueue deliveries that are due: parked retries and
        ones whose worker died. A duplicate message is a no-op (the claim fails)."""
        self.enqueue_deliveries = enqueue
        if self._delivery_sweeper is None:
            self._delivery_sweeper = self.loop.submit(self._sweep_deliveries_forever())

    async def _sweep_deliveries_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.delivery_sweep_seconds)
            try:
                await asyncio.to_thread(self.sweep_deliveries_once)
            except Exception:
                log.exception("delivery_sweep.failed")

    def sweep_deliveries_once(self) -> list[str]:
        store = self.deliverer.store
        with store.read() as connection:
            ids = due_deliveries(
                connection,
                store.now(),
                rewake_after_seconds=self.settings.stale_queued_seconds,
            )
        if ids and self.enqueue_deliveries is not None:
            self.enqueue_deliveries(ids)
        return ids

    def close(self) -> None:
        """Stop the sweepers and the loop, close connections."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._delivery_sweeper is not None:
            self._delivery_sweeper.cancel()
        self.loop.submit(self.http.aclose()).result(timeout=10)
        aclose = getattr(self.engine.model, "aclose", None)
        if aclose is not None:
            self.loop.submit(aclose()).result(timeout=10)
        self.loop.stop()
        self.ledger.dispose()
