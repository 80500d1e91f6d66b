"""The worker's core: take a run id, claim it, run the analyzer, write the outcome.

Everything that happens to a run goes through the ledger with a lease: a duplicate delivery of a
finished or leased run is a no-op, a lost lease stops the work without writing, transient model
errors put the run back with a backoff (what the failed attempt spent is still recorded), and one
summary line is logged per attempt.

A run executes what it was recorded for: the conversation version it points at and the analyzer
snapshot (spec and frozen procedures) named by its `spec_hash`, never whatever analyzer of that
name the worker has loaded now. Runs recorded before snapshots existed run the loaded analyzer of
exactly their recorded version, or fail if that version is not loaded.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import structlog

import analyzers
from analyzers.errors import ConfigError, TransientModelError
from analyzers.model.protocol import ModelClient
from analyzers.runtime.session import RunOptions
from analyzers.tools.base import HttpTransport
from schemas.analyzer import AnalyzerSpec
from schemas.conversation import Conversation
from schemas.procedure import Procedure
from schemas.result import AnalysisResult
from schemas.usage import Usage
from worker.catalog import Catalog
from worker.engine.learning import learn_from_result, may_propose
from worker.engine.lease_keeper import LeaseKeeper
from worker.engine.results_reader import LedgerResultsReader, ResultsSelection
from worker.ledger import ClaimedRun, Ledger, RunPlan, SnapshotNotFound
from worker.ledger.effects import LedgerEffectStore
from worker.observability import metrics, tracing
from worker.settings import Settings

log = structlog.get_logger("posthoc.worker")

Outcome = Literal["succeeded", "failed", "retry", "noop", "lease_lost", "released"]


@dataclass(frozen=True)
class ProcessOutcome:
    """How processing one delivery of a run ended. `retry_in` is set for `retry`."""

    status: Outcome
    retry_in: float | None = None
    trace: Mapping[str, str] = field(default_factory=dict)
    """The run's trace headers (empty with tracing off), for the messages it wakes."""
    children: tuple[str, ...] = ()
    """Chained runs (`after:`) recorded with this run's result: queued, to be processed."""


@dataclass(frozen=True)
class EngineConfig:
    """The settings the engine needs, as plain values."""

    worker_id: str
    default_model: str
    lease_seconds: float = 120.0
    heartbeat_seconds: float = 30.0
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 900.0
    price_factor: float = 1.0
    """Relative price of the model's turns (0.5 when they go through Message Batches)."""
    start_jitter_seconds: float = 0.0
    """Each run waits a random part of this before its claim (spreads a burst's turns)."""

    @classmethod
    def from_settings(cls, settings: Settings, worker_id: str) -> EngineConfig:
        """The engine's part of the process settings."""
        return cls(
            worker_id=worker_id,
            default_model=settings.model,
            lease_seconds=settings.lease_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            retry_base_seconds=settings.retry_base_seconds,
            retry_max_seconds=settings.retry_max_seconds,
            start_jitter_seconds=settings.start_jitter_seconds,
        )


class Engine:
    """Processes run ids for one worker process. Safe to call concurrently from one loop."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        catalog: Catalog,
        model: ModelClient,
        config: EngineConfig,
        http: HttpTransport | None = None,
        secrets: Mapping[str, str] | None = None,
        jitter: Callable[[], float] = random.random,
        request_reviews: Callable[[str], object] | None = None,
    ) -> None:
        self.ledger = ledger
        self.catalog = catalog
        self.model = model
        self.config = config
        self.http = http
        self.secrets = dict(secrets or {})
        self.jitter = jitter
        # Posts the Slack review of a tenant's pending learned procedures (None: no Slack).
        self.request_reviews = request_reviews
        self._in_flight: dict[str, asyncio.Task[AnalysisResult]] = {}
        self._releasing = False
        self.leases = LeaseKeeper(
            ledger,
            lease_seconds=config.lease_seconds,
            heartbeat_seconds=config.heartbeat_seconds,
        )

    @property
    def in_flight(self) -> int:
        """Analyses running now."""
        return len(self._in_flight)

    def release_all(self) -> int:
        """Stop every analysis in flight and hand its run back to the queue (a worker shutting
        down whose runs did not finish in time); returns how many were stopped. Runs claimed
        from now on are handed back at once. Call on the engine's loop."""
        self._releasing = True
        for work in self._in_flight.values():
            work.cancel()
        return len(self._in_flight)

    async def process(self, run_id: str, trace: Mapping[str, str] | None = None) -> ProcessOutcome:
        """Claim `run_id` and run it; a run that is finished or leased elsewhere is a no-op.
        `trace`: the trace headers of the message that carried it (continued by its span)."""
        worker_id = f"{self.config.worker_id}:{run_id}"
        delay = self.start_delay()
        if delay > 0:
            await asyncio.sleep(delay)
        claimed = await asyncio.to_thread(
            self.ledger.claim, run_id, worker_id, self.config.lease_seconds
        )
        if claimed is None:
            log.info("run.noop", run_id=run_id, reason="finished, leased elsewhere or not due")
            return ProcessOutcome("noop")
        metrics.run_started()
        try:
            with (
                structlog.contextvars.bound_contextvars(
                    run_id=run_id, analyzer=claimed.analyzer, attempt=claimed.attempt
                ),
                tracing.span(
                    "posthoc.run",
                    parent=trace,
                    run_id=run_id,
                    analyzer=claimed.analyzer,
                    analyzer_version=claimed.analyzer_version,
                    attempt=claimed.attempt,
                ) as span,
            ):
                outcome = await self._process_claimed(claimed, worker_id)
                tracing.set_attributes(span, status=outcome.status)
                return replace(outcome, trace=tracing.headers())
        finally:
            metrics.run_ended()

    async def _process_claimed(self, claimed: ClaimedRun, worker_id: str) -> ProcessOutcome:
        started = time.monotonic()
        conversation = await self._conversation(claimed)
        structlog.contextvars.bind_contextvars(
            conversation_id=conversation.conversation_id, tenant_id=conversation.tenant_id
        )
        program = await self._program(claimed)
        if isinstance(program, str):
            return await self._fail(claimed, worker_id, "config_error", program, started)
        spec, procedures = program
        reader: LedgerResultsReader | None = None
        if spec.input == "results":
            # A standalone analyzer runs on a selection record; its tools read the ledger
            # within that selection only.
            selection = ResultsSelection.from_conversation(conversation)
            if selection is None:
                return await self._fail(
                    claimed,
                    worker_id,
                    "config_error",
                    f"analyzer {spec.name!r} is standalone (input: results) and runs only on a "
                    "selection recorded by a schedule, not on a conversation",
                    started,
                )
            reader = LedgerResultsReader(self.ledger, selection)
        options = RunOptions(
            run_id=claimed.run_id,
            default_model=self.config.default_model,
            http=self.http,
            secrets=self.secrets,
            effects=LedgerEffectStore(self.ledger.engine),
            price_factor=self.config.price_factor,
            results=reader,
        )
        work = asyncio.create_task(
            analyzers.run(
                spec,
                conversation,
                model=self.model,
                procedures=procedures,
                companions=[] if reader else self.catalog.companions(spec, conversation),
                options=options,
            )
        )
        lease = self.leases.keep(claimed.run_id, worker_id, claimed.attempt, work)
        self._in_flight[claimed.run_id] = work
        if self._releasing:
            work.cancel()
        try:
            result = await work
        except asyncio.CancelledError:
            if lease.lost:
                log.warning("run.lease_lost", duration_s=round(time.monotonic() - started, 3))
                _count(claimed, "lease_lost", started)
                return ProcessOutcome("lease_lost")
            if self._releasing and work.cancelled():
                return await self._release(claimed, worker_id, started)
            work.cancel()  # this task was cancelled (shutdown): so is the analysis
            raise
        except TransientModelError as exc:
            return await self._retry(claimed, worker_id, exc, started)
        except ConfigError as exc:
            return await self._fail(claimed, worker_id, "config_error", str(exc), started)
        except Exception as exc:
            # A bug, not a model or data problem: dead-letter the run with the reason, so an
            # operator can fix it and `posthoc retry` it, instead of looping.
            log.exception("run.crashed")
            return await self._fail(
                claimed, worker_id, "internal_error", f"{type(exc).__name__}: {exc}", started
            )
        finally:
            self._in_flight.pop(claimed.run_id, None)
            self.leases.release(lease)
        tracing.record_tool_calls(result.trace)
        if result.provenance is not None and claimed.spec_hash is not None:
            provenance = result.provenance.model_copy(update={"spec_hash": claimed.spec_hash})
            result = result.model_copy(update={"provenance": provenance})
        # Before completing: a retry after a crash here learns again, which changes nothing.
        await self._learn(spec, result, conversation)
        # A rerun job runs only the analyzer it names (its budget covers nothing else).
        children = (
            []
            if claimed.trigger == "rerun"
            else self.catalog.chain_plans(result, conversation, claimed.max_attempts)
        )
        return await self._complete(claimed, worker_id, result, started, children)

    async def _learn(
        self, spec: AnalyzerSpec, result: AnalysisResult, conversation: Conversation
    ) -> None:
        """Store what a `procedure_capture` run proposes and ask for its review."""
        if not may_propose(spec, result):
            return
        learned = await asyncio.to_thread(
            learn_from_result, self.ledger.procedures, spec, result, conversation
        )
        if self.request_reviews is not None and any(o.needs_review for o in learned):
            await asyncio.to_thread(self.request_reviews, conversation.tenant_id)

    async def _conversation(self, claimed: ClaimedRun) -> Conversation:
        """What the claim read (None only from a ledger whose claim does not read it)."""
        if claimed.conversation is not None:
            return claimed.conversation
        return await asyncio.to_thread(self.ledger.run_conversation, claimed)

    async def _program(
        self, claimed: ClaimedRun
    ) -> tuple[AnalyzerSpec, tuple[Procedure, ...]] | str:
        """The analyzer and procedures this run executes, or why there are none (a message)."""
        if claimed.spec_hash is not None:
            # Almost always in this process's cache: read it there, without a thread.
            snapshot = self.ledger.remembered_snapshot(claimed.spec_hash)
            try:
                if snapshot is None:
                    snapshot = await asyncio.to_thread(
                        self.ledger.cached_snapshot, claimed.spec_hash
                    )
            except SnapshotNotFound as exc:
                return str(exc)
            return snapshot.spec, tuple(snapshot.procedures)
        spec = self.catalog.get(claimed.analyzer, claimed.analyzer_version)
        if spec is None:
            loaded = sorted(self.catalog.versions.get(claimed.analyzer, {}))
            return (
                f"analyzer {claimed.analyzer!r} version {claimed.analyzer_version!r} is not "
                f"loaded in this worker (loaded versions: {loaded}), and the run was recorded "
                "without a snapshot"
            )
        return spec, self.catalog.procedures

    async def _complete(
        self,
        claimed: ClaimedRun,
        worker_id: str,
        result: AnalysisResult,
        started: float,
        children: Sequence[RunPlan] = (),
    ) -> ProcessOutcome:
        written = await asyncio.to_thread(
            functools.partial(
                self.ledger.complete,
                claimed.run_id,
                worker_id,
                result,
                attempt=claimed.attempt,
                children=children,
            )
        )
        status = result.status if written else "lease_lost"
        _count(claimed, status, started, result.usage, result.cost.total_usd)
        if not written:
            log.warning("run.lease_lost", stage="complete")
            return ProcessOutcome("lease_lost")
        log.info(
            "run.finished",
            status=result.status,
            duration_s=round(time.monotonic() - started, 3),
            model=result.model,
            model_turns=result.model_turns,
            tool_calls=len(result.trace),
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            cache_read_tokens=result.usage.cache_read_input_tokens,
            cache_write_tokens=result.usage.cache_creation_input_tokens,
            cost_usd=round(result.cost.total_usd, 6),
            truncated=result.truncated,
            error_type=result.error.type if result.error else None,
        )
        chained: tuple[str, ...] = ()
        if children:
            found = await asyncio.to_thread(self.ledger.child_runs, claimed.run_id)
            chained = tuple(run.id for run in found if run.status == "queued")
        return ProcessOutcome(
            result.status if result.status != "skipped" else "succeeded", children=chained
        )

    async def _release(self, claimed: ClaimedRun, worker_id: str, started: float) -> ProcessOutcome:
        released = await asyncio.to_thread(
            self.ledger.release,
            claimed.run_id,
            worker_id,
            reason="the worker shut down before the analysis finished; handed back",
            attempt=claimed.attempt,
        )
        status: Outcome = "released" if released else "lease_lost"
        _count(claimed, status, started)
        log.info("run.released" if released else "run.lease_lost", stage="shutdown")
        return ProcessOutcome(status)

    async def _retry(
        self, claimed: ClaimedRun, worker_id: str, exc: TransientModelError, started: float
    ) -> ProcessOutcome:
        delay = self.backoff(claimed.attempt, exc.retry_after)
        outcome = await asyncio.to_thread(
            self.ledger.retry_later,
            claimed.run_id,
            worker_id,
            error_type="transient_model_error",
            message=str(exc),
            delay_seconds=delay,
            attempt=claimed.attempt,
            usage=exc.usage,
            cost_usd=exc.cost.total_usd,
        )
        status = {"queued": "retry", "lease_lost": "lease_lost"}.get(outcome, "failed")
        _count(claimed, status, started, exc.usage, exc.cost.total_usd)
        log.info(
            "run.finished",
            status=outcome,
            duration_s=round(time.monotonic() - started, 3),
            error_type="transient_model_error",
            retry_in_s=round(delay, 3),
            input_tokens=exc.usage.input_tokens,
            output_tokens=exc.usage.output_tokens,
            cost_usd=round(exc.cost.total_usd, 6),
        )
        if outcome == "queued":
            return ProcessOutcome("retry", retry_in=delay)
        return ProcessOutcome("lease_lost" if outcome == "lease_lost" else "failed")

    async def _fail(
        self, claimed: ClaimedRun, worker_id: str, error_type: str, message: str, started: float
    ) -> ProcessOutcome:
        written = await asyncio.to_thread(
            self.ledger.fail,
            claimed.run_id,
            worker_id,
            error_type=error_type,
            message=message,
            attempt=claimed.attempt,
        )
        _count(claimed, "failed" if written else "lease_lost", started)
        log.info(
            "run.finished",
            status="failed",
            duration_s=round(time.monotonic() - started, 3),
            error_type=error_type,
        )
        return ProcessOutcome("failed" if written else "lease_lost")

    def start_delay(self) -> float:
        """How long a run waits before its claim: a random part of `start_jitter_seconds`.

        Runs delivered together would otherwise reach every model-turn boundary together, and
        each boundary is CPU work (parsing the stream, building the next request) that the
        whole wave then waits for on this process's one loop.
        """
        return self.config.start_jitter_seconds * float(self.jitter())

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter, never sooner than the server asked."""
        ceiling = min(
            self.config.retry_base_seconds * 2 ** max(attempt - 1, 0),
            self.config.retry_max_seconds,
        )
        delay = ceiling * (0.5 + 0.5 * float(self.jitter()))
        return float(max(delay, retry_after or 0.0))


def _count(
    claimed: ClaimedRun,
    status: str,
    started: float,
    usage: Usage | None = None,
    cost_usd: float = 0.0,
) -> None:
    """The attempt's metrics: outcome, duration, tokens and spend (what a failed attempt spent
    too: it is billed all the same)."""
    metrics.run_attempt(
        claimed.analyzer,
        claimed.analyzer_version,
        status,
        time.monotonic() - started,
        usage or Usage(),
        cost_usd,
    )
