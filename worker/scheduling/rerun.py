"""Reruns as jobs: select stored conversations, record a job, run it here, resume it after a
crash, stop it at a budget.

`start_rerun_job` selects and records the job (or, with `dry_run`, only counts and estimates);
`run_job` executes it in this process: the runs left unfinished by an earlier process first, then
one run per pending item, recorded only while the budget allows (what the job's runs spent plus
an estimate for each run in flight and for the next one must stay within it). A run is recorded
together with its item (see `worker.ledger.jobs`), so a job killed at any moment and resumed
never records a conversation's run twice; a run the dead process held is taken over as soon as
the resume starts.

A rerun records new runs beside the old ones (`rerun_of` names the previous run), executes the
analyzer with HTTP writes described, not made (`dry_run`), unless `allow_writes`, and delivers to
the analyzer's sinks only with `deliver`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from analyzers.definitions.triggers import analyzer_applies
from analyzers.definitions.versions import selector
from analyzers.errors import ConfigError
from analyzers.model.profiles import BATCH_PRICE_FACTOR
from analyzers.model.protocol import ModelClient
from analyzers.runtime.snapshot import build_snapshot
from analyzers.tools.base import HttpTransport
from schemas.analyzer import AnalyzerSpec
from schemas.rerun import JobSummary, RerunSelection
from worker.catalog import Catalog
from worker.engine.batch import process_all
from worker.engine.runner import Engine, EngineConfig
from worker.ledger import Ledger, RunPlan
from worker.ledger import jobs as job_store
from worker.ledger.jobs import JobItem, JobLedger, JobRecord
from worker.scheduling.estimate import estimate, stored_cost_per_run
from worker.scheduling.selection import select_conversations

BUDGET_REASON = "budget: spent plus in-flight estimates would pass --budget-usd"
CANCELLED_REASON = "cancelled"


class JobBusy(RuntimeError):
    """Another live process is working on this job."""


@dataclass(frozen=True)
class DryRun:
    """What a rerun would do: how many conversations, at what estimated cost."""

    analyzer: str
    analyzer_version: str
    selected: int
    estimated_usd: float
    estimated_batch_usd: float
    estimate_per_run_usd: float
    from_stored_usage: bool


def resolve_analyzer(catalog: Catalog, selection: RerunSelection) -> AnalyzerSpec:
    """The loaded analyzer the selection names (its newest version without `version`)."""
    spec = catalog.get(selection.analyzer, selection.version)
    if spec is None:
        loaded = sorted(catalog.versions.get(selection.analyzer, {}))
        wanted = selection.analyzer + (f"@{selection.version}" if selection.version else "")
        raise ConfigError(
            f"--analyzer: {wanted!r} is not loaded (loaded versions of "
            f"{selection.analyzer!r}: {loaded}; known analyzers: {sorted(catalog.versions)})"
        )
    return spec


def start_rerun_job(
    ledger: Ledger,
    catalog: Catalog,
    selection: RerunSelection,
    *,
    default_model: str,
    budget_usd: float | None = None,
    allow_writes: bool = False,
    deliver: bool = False,
    batch: bool = False,
    requested_by: str = "cli",
    dry_run: bool = False,
) -> JobSummary | DryRun:
    """Select the conversations and record the job (status `running`, every item pending);
    with `dry_run`, only say how many and what they would cost. Run it with `run_job`.

    Raises `ConfigError` for an analyzer that is not loaded and `SelectionError` for a bad
    selection (both name the option).
    """
    if budget_usd is not None and budget_usd < 0:
        raise ValueError(f"--budget-usd must not be negative, got {budget_usd}")
    spec = resolve_analyzer(catalog, selection)
    store = JobLedger(ledger.engine, now=ledger.clock)
    with store.read() as connection:
        chosen = list(select_conversations(connection, selection))
        stored = stored_cost_per_run(connection, spec.name, spec.version)
    per_run, total = estimate(stored, spec, [c.conversation for c in chosen], default_model)
    if dry_run:
        return DryRun(
            analyzer=spec.name,
            analyzer_version=spec.version,
            selected=len(chosen),
            estimated_usd=round(total, 6),
            estimated_batch_usd=round(total * BATCH_PRICE_FACTOR, 6),
            estimate_per_run_usd=round(per_run, 6),
            from_stored_usage=stored is not None,
        )
    stamp = store.now()
    job = JobRecord(
        id=uuid.uuid4().hex[:16],
        analyzer=spec.name,
        analyzer_version=spec.version,
        selection=selection.model_dump(mode="json", exclude_defaults=True),
        status="running",
        requested_by=requested_by,
        budget_usd=budget_usd,
        allow_writes=allow_writes,
        deliver=deliver,
        batch=batch,
        estimate_per_run_usd=per_run,
        estimated_usd=total,
        selected=len(chosen),
        runner=None,
        created_at=stamp,
        updated_at=stamp,
        finished_at=None,
    )
    with store.write() as connection:
        job_store.create_job(
            connection,
            stamp,
            job,
            [(c.conversation_pk, c.conversation_version_id) for c in chosen],
        )
        if not chosen:
            job_store.set_status(connection, stamp, job.id, "done", finished=True)
        return job_store.summary(connection, job.id)


def job_summary(ledger: Ledger, job_id: str) -> JobSummary:
    """The job's figures now (JobNotFound for an unknown id)."""
    with JobLedger(ledger.engine, now=ledger.clock).read() as connection:
        return job_store.summary(connection, job_id)


def cancel_job(ledger: Ledger, job_id: str) -> JobSummary:
    """Stop recording new runs for the job (runs already recorded still finish)."""
    store = JobLedger(ledger.engine, now=ledger.clock)
    with store.write() as connection:
        if job_store.set_status(connection, store.now(), job_id, "cancelled", finished=True):
            job_store.skip_pending(connection, job_id, CANCELLED_REASON)
        return job_store.summary(connection, job_id)


def runner_identity() -> str:
    """This process, as a job's runner: host, pid and a token (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def runner_alive(runner: str) -> bool:
    """Whether the process named by a runner identity may still be running.

    Only a process on this host can be checked; one elsewhere counts as alive.
    """
    host, _, rest = runner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


Progress = Callable[[JobSummary], None]


@dataclass
class JobRunner:
    """Executes one job in this process (see the module docstring)."""

    ledger: Ledger
    catalog: Catalog
    model: ModelClient
    config: EngineConfig
    http: HttpTransport | None = None
    secrets: Mapping[str, str] | None = None
    concurrency: int = 8
    on_progress: Progress | None = None
    force: bool = False
    """Take the job over even from a runner that looks alive (it runs on another host)."""
    max_attempts: int = 3

    async def run_and_close(self, job_id: str) -> JobSummary:
        """`run`, then close the model and HTTP clients (the caller's whole use of them)."""
        try:
            return await self.run(job_id)
        finally:
            for resource in (self.model, self.http):
                aclose = getattr(resource, "aclose", None)
                if aclose is not None:
                    await aclose()

    async def run(self, job_id: str) -> JobSummary:
        store = JobLedger(self.ledger.engine, now=self.ledger.clock)
        runner = self.config.worker_id
        job = await asyncio.to_thread(self._take_over, store, job_id, runner)
        if job.status != "running":
            return await asyncio.to_thread(self._summary, store, job_id)
        spec = self.catalog.get(job.analyzer, job.analyzer_version)
        if spec is None:
            raise ConfigError(
                f"job {job_id}: analyzer {selector(job.analyzer, job.analyzer_version)!r} is "
                f"not loaded (loaded: {sorted(self.catalog.versions.get(job.analyzer, {}))})"
            )
        rerun_spec = spec.model_copy(
            update={
                "dry_run": spec.dry_run or not job.allow_writes,
                "sinks": spec.sinks if job.deliver else [],
            }
        )
        engine = Engine(
            ledger=self.ledger,
            catalog=self.catalog,
            model=self.model,
            http=self.http,
            secrets=self.secrets,
            config=self.config,
        )
        factor = BATCH_PRICE_FACTOR if job.batch else 1.0
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def process(run_id: str) -> None:
            try:
                await process_all(engine, [run_id], concurrency=1)
            finally:
                slots.release()
            await self._progress(store, job_id)

        def spawn(run_id: str) -> None:
            task = asyncio.create_task(process(run_id))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        for run_id in await asyncio.to_thread(self._unfinished, store, job_id):
            await slots.acquire()
            spawn(run_id)
        stopped = False
        while not stopped:
            batch = await asyncio.to_thread(self._pending, store, job_id)
            if not batch:
                break
            for item in batch:
                await slots.acquire()
                verdict = await asyncio.to_thread(
                    self._record_next, store, job, rerun_spec, item, factor
                )
                if verdict == "stop":
                    slots.release()
                    stopped = True
                    break
                if verdict is None:
                    slots.release()
                    await self._progress(store, job_id)
                    continue
                spawn(verdict)
        if tasks:
            await asyncio.gather(*tasks)
        return await asyncio.to_thread(self._finish, store, job_id)

    def _take_over(self, store: JobLedger, job_id: str, runner: str) -> JobRecord:
        with store.write() as connection:
            job = job_store.get_job(connection, job_id)
            if job.status != "running":
                return job
            if job.runner and not self.force and runner_alive(job.runner):
                raise JobBusy(
                    f"job {job_id} is being run by {job.runner} (still alive); wait for it or "
                    "cancel it with `posthoc jobs cancel`"
                )
            job_store.take_over(connection, store.now(), job_id, runner)
            return job

    def _unfinished(self, store: JobLedger, job_id: str) -> list[str]:
        with store.read() as connection:
            return job_store.unfinished_runs(connection, job_id)

    def _pending(self, store: JobLedger, job_id: str) -> list[JobItem]:
        with store.read() as connection:
            if job_store.get_job(connection, job_id).status != "running":
                return []
            return job_store.pending_items(connection, job_id, 200)

    def _record_next(
        self, store: JobLedger, job: JobRecord, spec: AnalyzerSpec, item: JobItem, factor: float
    ) -> str | None:
        """The run id to process, None when the item needs no run, "stop" when the job must
        stop recording (cancelled, or the budget would pass)."""
        if item.conversation_version_id is not None:
            conversation = self.ledger.get_conversation_version(item.conversation_version_id)
        else:
            conversation = self.ledger.get_conversation(item.conversation_pk)
        decision = analyzer_applies(spec, conversation)
        plan = RunPlan(
            analyzer=spec.name,
            analyzer_version=spec.version,
            skip_reason=None if decision.applies else decision.reason,
            max_attempts=self.max_attempts,
            snapshot=(
                build_snapshot(spec, conversation, self.catalog.procedures)
                if decision.applies
                else None
            ),
        )
        with store.write() as connection:
            if job_store.get_job(connection, job.id).status != "running":
                return "stop"
            if job.budget_usd is not None and decision.applies:
                spent = job_store.spend(connection, job.id)
                # Once some of the job's runs finished, their mean is the better estimate.
                per_run = (
                    spent.finished_usd / spent.finished
                    if spent.finished
                    else job.estimate_per_run_usd * factor
                )
                if spent.spent_usd + (spent.in_flight + 1) * per_run > job.budget_usd:
                    job_store.set_status(
                        connection, store.now(), job.id, "budget_exhausted", finished=True
                    )
                    job_store.skip_pending(connection, job.id, BUDGET_REASON)
                    return "stop"
            record = job_store.record_item_run(connection, store.now(), job.id, item, plan)
        if record is None or record.status != "queued":
            return None
        return record.id

    async def _progress(self, store: JobLedger, job_id: str) -> None:
        if self.on_progress is not None:
            self.on_progress(await asyncio.to_thread(self._summary, store, job_id))

    def _summary(self, store: JobLedger, job_id: str) -> JobSummary:
        with store.read() as connection:
            return job_store.summary(connection, job_id)

    def _finish(self, store: JobLedger, job_id: str) -> JobSummary:
        with store.write() as connection:
            summary = job_store.summary(connection, job_id)
            if summary.status == "running" and summary.pending == 0 and summary.in_flight == 0:
                job_store.set_status(connection, store.now(), job_id, "done", finished=True)
            return job_store.summary(connection, job_id)


async def run_job(runner: JobRunner, job_id: str) -> JobSummary:
    """Execute (or resume) the job in this process; see `JobRunner`. Returns its summary."""
    return await runner.run(job_id)
