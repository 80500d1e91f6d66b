"""Whether this worker process consumes from its broker, and what it does when it stops.

A busy worker used to survive a broker outage in a zombie state: the early acknowledgements of
the messages it held failed (`Couldn't ack`), kombu's client-side QoS kept counting those
messages as unacknowledged, so the consumer believed its prefetch window full and never asked
the broker for more, and never noticed the dead connection either. Nothing said so.

Three parts, so that a worker either consumes or stops existing:
- `ConsumerWatch`, a Celery consumer bootstep: marks the consumer consuming while its blueprint
  runs, ticks on the consumer's own event loop every second (a loop that no longer turns stops
  ticking), and when the consumer stalls with pool slots free it raises a connection error
  inside the loop, which makes Celery drop the connection and reconnect with a fresh one.
  Stalled means, on Redis, that kombu's client-side prefetch window stays full; on RabbitMQ
  (where the broker keeps the window) that no task has started for a while although work waits
  for this worker: a request reserved but not started, or messages the broker still held after
  the last task started (the sweeper measures the depth). The one such stall seen so far (two
  threads sending `basic.qos` at once after a reconnect) is prevented at its cause in
  `celery_app.py`; this check is for the next one. A consumer that stalls again and again
  without a task starting in between reports itself not consuming, so the watchdog ends it;
  one whose event loop hangs stops ticking, with the same end.
- `Watchdog`, a thread: while consuming it touches the heartbeat file; when the process has not
  consumed for `exit_after` seconds it exits non-zero so its supervisor starts a fresh one. Runs
  are durable in the ledger, so exiting loses nothing: their leases expire and they are taken
  over.
- `serve_health`, a small HTTP port: `GET /healthz` is 200 while consuming, 503 otherwise;
  `GET /metrics` is the worker's Prometheus metrics (`worker/observability/metrics.py`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog
from celery import bootsteps
from celery.worker import state as worker_state

from worker.observability import metrics

log = structlog.get_logger("posthoc.worker.liveness")

EXIT_NOT_CONSUMING = 75
"""The exit status of a worker that stopped consuming (EX_TEMPFAIL: start it again)."""
TICK_SECONDS = 1.0
STALE_TICK_SECONDS = 10.0
"""A consumer whose event loop has not ticked for this long is not consuming."""
STALLS_BEFORE_NOT_CONSUMING = 3
"""Forced reconnects in a row, with no task started in between, after which the consumer
reports itself not consuming (and the watchdog's exit clock starts)."""


@dataclass(frozen=True)
class LivenessReport:
    """What the health port answers."""

    consuming: bool
    state_seconds: float
    """How long the process has been in this state (consuming or not)."""
    last_tick_seconds: float | None
    restarts: int

    def as_json(self) -> dict[str, Any]:
        return {
            "consuming": self.consuming,
            "state_seconds": round(self.state_seconds, 3),
            "last_tick_seconds": (
                None if self.last_tick_seconds is None else round(self.last_tick_seconds, 3)
            ),
            "consumer_restarts": self.restarts,
        }


class Liveness:
    """The consumer's state as its bootstep reports it; read from other threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = False
        self._changed_at = clock()
        self._last_tick: float | None = None
        self._was_live = False
        self.restarts = 0
        self.stopping = False
        """Set on a warm shutdown: the consumer stops on purpose while analyses finish."""
        self._stalls = 0
        self._broker_depth: int | None = None
        self._broker_depth_at: float | None = None

    def consumer_started(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            self._last_tick = self._clock()
            self.restarts += 1

    def consumer_stopped(self) -> None:
        with self._lock:
            self._started = False

    def now(self) -> float:
        """This liveness's clock (the stall check keeps its times on it too)."""
        return self._clock()

    def tick(self) -> None:
        with self._lock:
            self._last_tick = self._clock()

    def note_broker_depth(self, depth: int | None) -> None:
        """What the sweeper last measured: messages waiting in this worker's queues."""
        with self._lock:
            self._broker_depth, self._broker_depth_at = depth, self._clock()

    def broker_held_work_after(self, moment: float) -> bool:
        """Whether the broker still held waiting messages at a measurement after `moment`."""
        with self._lock:
            return (
                self._broker_depth is not None
                and self._broker_depth > 0
                and self._broker_depth_at is not None
                and self._broker_depth_at > moment
            )

    def stalled(self) -> None:
        """The consumer was forced to reconnect because it stalled."""
        with self._lock:
            self._stalls += 1

    def progressed(self) -> None:
        """A task started: whatever stalled before is unstuck."""
        with self._lock:
            self._stalls = 0

    def report(self) -> LivenessReport:
        """Consuming means: the consumer started, and its event loop ticked lately."""
        with self._lock:
            now = self._clock()
            tick_age = None if self._last_tick is None else now - self._last_tick
            live = (
                self._started
                and tick_age is not None
                and tick_age <= STALE_TICK_SECONDS
                and self._stalls < STALLS_BEFORE_NOT_CONSUMING
            )
            if live != self._was_live:
                self._was_live = live
                self._changed_at = now
            return LivenessReport(live, now - self._changed_at, tick_age, self.restarts)


def _can_consume(consumer: Any) -> bool | None:
    """Whether kombu's client-side QoS lets the task consumer fetch (None: no such QoS, as on
    AMQP where the broker keeps the window)."""
    channel = getattr(getattr(consumer, "task_consumer", None), "channel", None)
    can_consume = getattr(getattr(channel, "qos", None), "can_consume", None)
    return None if can_consume is None else bool(can_consume())


class ConsumerWatch(bootsteps.StartStopStep):
    """Reports the consumer to `app.conf.posthoc_liveness` and unsticks a stalled one."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.liveness: Liveness | None = parent.app.conf.get("posthoc_liveness")
        stall_seconds = parent.app.conf.get("posthoc_stall_seconds")
        self.stall_seconds: float = 15.0 if stall_seconds is None else float(stall_seconds)
        self._entry: Any = None
        self._stalled_since: float | None = None
        self._started_tasks = worker_state.all_total_count[0]
        self._progress_at = self.liveness.now() if self.liveness is not None else 0.0

    def start(self, parent: Any) -> None:
        if self.liveness is None:
            return
        self.liveness.consumer_started()
        self._stalled_since = None
        self._entry = parent.timer.call_repeatedly(TICK_SECONDS, self._check, (parent,))

    def stop(self, parent: Any) -> None:
        if self._entry is not None:
            self._entry.cancel()
            self._entry = None
        if self.liveness is not None:
            self.liveness.consumer_stopped()

    shutdown = stop

    def _check(self, consumer: Any) -> None:
        """On the consumer's event loop: tick, and force a reconnect when stalled."""
        assert self.liveness is not None  # noqa: S101 - only scheduled with a liveness
        self.liveness.tick()
        now = self.liveness.now()
        started_tasks = worker_state.all_total_count[0]
        if started_tasks != self._started_tasks:
            self._started_tasks, self._progress_at = started_tasks, now
            self.liveness.progressed()
        slots = getattr(consumer.pool, "limit", None) or 0
        free_slots = slots - len(worker_state.active_requests)
        waiting = len(worker_state.reserved_requests) - len(worker_state.active_requests)
        can_consume = _can_consume(consumer)
        if can_consume is None:  # the broker keeps the window (AMQP)
            stalled = (
                free_slots > 0
                and now - self._progress_at >= self.stall_seconds
                and (waiting > 0 or self.liveness.broker_held_work_after(self._progress_at))
            )
        else:
            stalled = can_consume is False and free_slots > 0 and waiting <= 0
        if not stalled:
            self._stalled_since = None
            return
        if self._stalled_since is None:
            self._stalled_since = now
            return
        if now - self._stalled_since < self.stall_seconds or consumer.hub is None:
            return
        self._stalled_since = None
        self.liveness.stalled()
        log.warning(
            "consumer.stalled",
            free_slots=free_slots,
            waiting_requests=max(waiting, 0),
            stalled_seconds=self.stall_seconds,
        )
        # Raised inside the event loop, a connection error makes Celery close this connection
        # and reconnect (`Consumer.start`); the new channel has a fresh prefetch window, and the
        # broker gives the unacknowledged messages of the old one back.
        raise ConnectionResetError("posthoc: the consumer stalled with free slots")


class Watchdog:
    """Touches the heartbeat file while consuming; exits the process when it stopped too long."""

    def __init__(
        self,
        liveness: Liveness,
        *,
        exit_after: float,
        heartbeat_file: Path | None = None,
        exit: Callable[[int], None] = os._exit,
    ) -> None:
        self.liveness = liveness
        self.exit_after = exit_after
        self.heartbeat_file = heartbeat_file
        self._exit = exit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="posthoc-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def check_once(self) -> LivenessReport:
        report = self.liveness.report()
        if report.consuming:
            self._beat()
        elif report.state_seconds >= self.exit_after and not self.liveness.stopping:
            log.error(
                "worker.not_consuming_exit",
                not_consuming_seconds=round(report.state_seconds, 1),
                exit_status=EXIT_NOT_CONSUMING,
            )
            self._exit(EXIT_NOT_CONSUMING)
        return report

    def _beat(self) -> None:
        if self.heartbeat_file is None:
            return
        try:
            self.heartbeat_file.touch()
        except OSError as error:
            log.warning(
                "heartbeat_file.unwritable", path=str(self.heartbeat_file), error=str(error)
            )

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            self.check_once()


class HealthHandler(BaseHTTPRequestHandler):
    """`GET /healthz` (200 while consuming, 503 otherwise, with a JSON report) and `GET /metrics`
    (Prometheus, from `metrics_dir` in multiprocess mode). Subclasses say what health is."""

    metrics_dir: Path | None = None

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether this consumes, and the report to answer with."""
        raise NotImplementedError

    def do_GET(self) -> None:  # the stdlib's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, content_type = metrics.exposition(self.metrics_dir)
            self._answer(200, content_type, body)
            return
        if path != "/healthz":
            self.send_error(404)
            return
        consuming, report = self.health()
        self._answer(200 if consuming else 503, "application/json", json.dumps(report).encode())

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's name
        """Probes every few seconds would drown the log: say nothing."""


class _LivenessHandler(HealthHandler):
    liveness: Liveness

    def health(self) -> tuple[bool, dict[str, Any]]:
        report = self.liveness.report()
        return report.consuming, report.as_json()


def serve_handler(handler: type[HealthHandler], host: str, port: int) -> ThreadingHTTPServer:
    """Serve `handler` on `host:port` from a daemon thread; `shutdown()` stops it."""
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="posthoc-health", daemon=True).start()
    return server


def serve_health(
    liveness: Liveness, host: str, port: int, metrics_dir: Path | None = None
) -> ThreadingHTTPServer:
    """Serve this process's `GET /healthz` and `GET /metrics` on `host:port` from a daemon
    thread; `shutdown()` stops it. `metrics_dir`: the multiprocess directory, when there is
    one."""
    handler = type(
        "HealthHandler", (_LivenessHandler,), {"liveness": liveness, "metrics_dir": metrics_dir}
    )
    return serve_handler(handler, host, port)
