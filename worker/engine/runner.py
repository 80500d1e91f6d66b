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
import contextlib
import functools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

import analyzers
from analyzers.errors import ConfigError, TransientModelError
from analyzers.model.protocol import ModelClient
from analyzers.runtime.session import RunOptions
from analyzers.tools.base import HttpTransport
from schemas.analyzer import AnalyzerSpec
from schemas.procedure import Procedure
from schemas.result import AnalysisResult
from worker.catalog import Catalog
from worker.engine.results_reader import LedgerResultsReader, ResultsSelection
from worker.ledger import ClaimedRun, Ledger, RunPlan, SnapshotNotFound
from worker.ledger.effects import LedgerEffectStore
from worker.settings import Settings

log = structlog.get_logger("posthoc.worker")

Outcome = Literal["succeeded", "failed", "retry", "noop", "lease_lost"]


@dataclass(frozen=True)
class ProcessOutcome:
    """How processing one delivery of a run ended. `retry_in` is set for `retry`."""

    status: Outcome
    retry_in: float | None = None
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
        )


class LeaseLost(Exception):
    """Another worker took the run over; this one must stop without writing."""


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
    ) -> None:
        self.ledger = ledger
        self.catalog = catalog
        self.model = model
        self.config = config
        self.http = http
        self.secrets = dict(secrets or {})
        self.jitter = jitter

    async def process(self, run_id: str) -> ProcessOutcome:
        """Claim `run_id` and run it; a run that is finished or leased elsewhere is a no-op."""
        worker_id = f"{self.config.worker_id}:{run_id}"
        claimed = await asyncio.to_thread(
            self.ledger.claim, run_id, worker_id, self.config.lease_seconds
        )
        if claimed is None:
            log.info("run.noop", run_id=run_id, reason="finished, leased elsewhere or not due")
            return ProcessOutcome("noop")
        with structlog.contextvars.bound_contextvars(
            run_id=run_id, analyzer=claimed.analyzer, attempt=claimed.attempt
        ):
            return await self._process_claimed(claimed, worker_id)

    async def _process_claimed(self, claimed: ClaimedRun, worker_id: str) -> ProcessOutcome:
        started = time.monotonic()
        conversation = await asyncio.to_thread(self.ledger.run_conversation, claimed)
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
        heartbeat = asyncio.create_task(self._keep_lease(claimed, worker_id, work))
        try:
            result = await work
        except asyncio.CancelledError:
            if heartbeat.done() and isinstance(heartbeat.exception(), LeaseLost):
                log.warning("run.lease_lost", duration_s=round(time.monotonic() - started, 3))
                return ProcessOutcome("lease_lost")
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
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError, LeaseLost):
                await heartbeat
        if result.provenance is not None and claimed.spec_hash is not None:
            provenance = result.provenance.model_copy(update={"spec_hash": claimed.spec_hash})
            result = result.model_copy(update={"provenance": provenance})
        # A rerun job runs only the analyzer it names (its budget covers nothing else).
        children = (
            []
            if claimed.trigger == "rerun"
            else self.catalog.chain_plans(result, conversation, claimed.max_attempts)
        )
        return await self._complete(claimed, worker_id, result, started, children)

    async def _program(
        self, claimed: ClaimedRun
    ) -> tuple[AnalyzerSpec, tuple[Procedure, ...]] | str:
        """The analyzer and procedures this run executes, or why there are none (a message)."""
        if claimed.spec_hash is not None:
            try:
                snapshot = await asyncio.to_thread(self.ledger.get_snapshot, claimed.spec_hash)
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

    async def _keep_lease(
        self, claimed: ClaimedRun, worker_id: str, work: asyncio.Task[AnalysisResult]
    ) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds)
            held = await asyncio.to_thread(
                self.ledger.heartbeat,
                claimed.run_id,
                worker_id,
                self.config.lease_seconds,
                attempt=claimed.attempt,
            )
            if not held:
                work.cancel()
                raise LeaseLost(claimed.run_id)

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
        log.info(
            "run.finished",
            status="failed",
            duration_s=round(time.monotonic() - started, 3),
            error_type=error_type,
        )
        return ProcessOutcome("failed" if written else "lease_lost")

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter, never sooner than the server asked."""
        ceiling = min(
            self.config.retry_base_seconds * 2 ** max(attempt - 1, 0),
            self.config.retry_max_seconds,
        )
        delay = ceiling * (0.5 + 0.5 * float(self.jitter()))
        return float(max(delay, retry_after or 0.0))
