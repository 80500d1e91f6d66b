"""Every Prometheus metric posthoc exports, defined once, and how a process exposes them.

The code that does the work calls these at its existing seams, one line each (the engine, the
deliverer, the webhook handler, the sweeper). Names and labels follow Prometheus conventions:
`_total` counters, base units (`_seconds`, dollars), and only bounded label values: analyzer
names and versions, sink names and webhook source names come from configuration, statuses and
causes from fixed lists here. Conversation, run and tenant ids are never labels.

Several worker processes on one host (`posthoc worker --processes N`): set
`PROMETHEUS_MULTIPROC_DIR` to an empty directory private to that worker (prometheus_client reads
it when it is imported, before posthoc starts); every process then writes its samples there and
`exposition()` aggregates the directory, so any one process's port shows the whole worker.
Gauges say how they combine across processes (`multiprocess_mode`).
"""

from __future__ import annotations

import threading
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

from schemas.usage import Usage

RUN_STATUSES = ("succeeded", "failed", "skipped", "retry", "lease_lost", "released")
"""`posthoc_runs_total{status}`: how one attempt of a run ended."""
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")
RETRY_CAUSES = (
    "rate_limited",
    "overloaded",
    "server_error",
    "timeout",
    "conflict",
    "connection",
    "stream_dropped",
    "stream_error",
    "idle_stream",
    "malformed_tool_input",
    "other",
)
"""`posthoc_model_retries_total{cause}`: why the model adapter called the API again."""
WEBHOOK_ANSWERS = (
    "accepted",
    "duplicate",
    "ignored",
    "unauthorized",
    "bad_json",
    "too_large",
    "unmappable",
)
DELIVERY_STATUSES = ("delivered", "pending", "dead", "not_due")

# Analyses last seconds to tens of minutes; model calls a fraction of a second to minutes.
RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))
MODEL_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))

RUNS = Counter(
    "posthoc_runs",
    "Run attempts by how they ended.",
    ["analyzer", "version", "status"],
)
RUN_DURATION = Histogram(
    "posthoc_run_duration_seconds",
    "Wall-clock time of one run attempt, claim to outcome.",
    ["analyzer", "status"],
    buckets=RUN_BUCKETS,
)
MODEL_LATENCY = Histogram(
    "posthoc_model_request_duration_seconds",
    "Time of one model call (a streamed turn), its in-call retries included.",
    ["model"],
    buckets=MODEL_BUCKETS,
)
TOKENS = Counter(
    "posthoc_model_tokens",
    "Model tokens spent, by analyzer and kind (input, output, cache_read, cache_write).",
    ["analyzer", "kind"],
)
COST = Counter(
    "posthoc_model_cost_dollars",
    "Model spend in US dollars, by analyzer.",
    ["analyzer"],
)
MODEL_RETRIES = Counter(
    "posthoc_model_retries",
    "Model API calls made again inside one turn, by cause.",
    ["cause"],
)
DELIVERIES = Counter(
    "posthoc_deliveries",
    "Delivery attempts by sink and outcome (dead: dead-lettered).",
    ["sink", "status"],
)
WEBHOOK_REQUESTS = Counter(
    "posthoc_webhook_requests",
    "Webhook deliveries received by `posthoc serve`, by source and answer.",
    ["source", "answer"],
)
QUEUE_DEPTH = Gauge(
    "posthoc_queue_depth",
    "Messages the broker holds for the run queues, as the last sweep read it.",
    multiprocess_mode="livemax",
)
OLDEST_WAITING = Gauge(
    "posthoc_queue_oldest_waiting_seconds",
    "Age of the oldest run waiting to be claimed (queued and due), at the last sweep.",
    multiprocess_mode="livemax",
)
LEASES_RECLAIMED = Counter(
    "posthoc_leases_reclaimed",
    "Runs whose worker's lease expired, taken over or failed by a sweep.",
)
IN_FLIGHT = Gauge(
    "posthoc_worker_runs_in_flight",
    "Analyses this worker is running now.",
    multiprocess_mode="livesum",
)
FREE_SLOTS = Gauge(
    "posthoc_worker_free_slots",
    "Analyses this worker could start now (its concurrency less those in flight).",
    multiprocess_mode="livesum",
)

_slots_lock = threading.Lock()
_slots = {"total": 0, "taken": 0}


def configure_slots(total: int) -> None:
    """Say how many analyses this process runs at once (its concurrency)."""
    with _slots_lock:
        _slots["total"] = total
        FREE_SLOTS.set(max(total - _slots["taken"], 0))


def run_started() -> None:
    """One more analysis in flight."""
    _move_slot(+1)


def run_ended() -> None:
    """One analysis fewer in flight."""
    _move_slot(-1)


def _move_slot(step: int) -> None:
    with _slots_lock:
        _slots["taken"] = max(_slots["taken"] + step, 0)
        IN_FLIGHT.set(_slots["taken"])
        FREE_SLOTS.set(max(_slots["total"] - _slots["taken"], 0))


def run_attempt(
    analyzer: str, version: str, status: str, seconds: float, usage: Usage, cost_usd: float
) -> None:
    """Count one attempt of a run: its outcome, duration, tokens and spend."""
    RUNS.labels(analyzer, version, status).inc()
    RUN_DURATION.labels(analyzer, status).observe(seconds)
    tokens = TOKENS.labels
    tokens(analyzer, "input").inc(usage.input_tokens)
    tokens(analyzer, "output").inc(usage.output_tokens)
    tokens(analyzer, "cache_read").inc(usage.cache_read_input_tokens)
    tokens(analyzer, "cache_write").inc(usage.cache_creation_input_tokens)
    if cost_usd > 0:
        COST.labels(analyzer).inc(cost_usd)


def model_retry(cause: str) -> None:
    """The model adapter's `on_retry` hook: one in-call retry, by a cause from RETRY_CAUSES."""
    MODEL_RETRIES.labels(cause if cause in RETRY_CAUSES else "other").inc()


def exposition(multiprocess_dir: Path | None = None) -> tuple[bytes, str]:
    """The text format of every metric of this process, or of every process writing to
    `multiprocess_dir` (the worker's `PROMETHEUS_MULTIPROC_DIR`), and its content type."""
    if multiprocess_dir is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def process_exited(pid: int, multiprocess_dir: Path | None) -> None:
    """Forget a dead child's live gauges (in-flight, free slots): call from the parent when a
    worker child exits, in multiprocess mode."""
    if multiprocess_dir is not None:
        _multiprocess.mark_process_dead(pid, str(multiprocess_dir))  # type: ignore[no-untyped-call]
