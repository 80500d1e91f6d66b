"""Runs the rerun jobs schedules start, in the beat process: one at a time, in a background
thread, each on its own event loop (as `posthoc rerun` runs a job in its process).

A job is resumable: should the beat die while one runs, `posthoc rerun --resume JOB` (or the
job's next scheduled firing being adopted by another beat) continues it without running any
conversation twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

from worker.scheduling.rerun import JobBusy, JobRunner

log = structlog.get_logger("posthoc.beat")

RunnerFactory = Callable[[], JobRunner]


class JobExecutor:
    """`execute(job_id)` queues the job; `close()` waits for the one running to finish."""

    def __init__(self, runner_factory: RunnerFactory) -> None:
        self.runner_factory = runner_factory
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="posthoc-rerun")

    def __call__(self, job_id: str) -> Future[None]:
        return self._pool.submit(self._run, job_id)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job_id: str) -> None:
        runner = self.runner_factory()
        try:
            summary = asyncio.run(runner.run_and_close(job_id))
        except JobBusy:
            log.info("schedule.rerun_busy", job_id=job_id)  # another process runs it
            return
        except Exception:
            log.exception("schedule.rerun_failed", job_id=job_id)
            return
        log.info(
            "schedule.rerun_finished",
            job_id=job_id,
            status=summary.status,
            selected=summary.selected,
            recorded=summary.recorded,
            spent_usd=summary.spent_usd,
        )
