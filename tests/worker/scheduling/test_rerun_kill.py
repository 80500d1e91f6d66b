"""A rerun killed with SIGKILL halfway and resumed: every selected conversation gets exactly one
new result, the old results are untouched, no run completes twice, and the counts add up.

100 conversations by default (CI); POSTHOC_RERUN_KILL_CONVERSATIONS=1000 for the full-size run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from schemas.rerun import JobSummary, RerunSelection
from worker.catalog import Catalog
from worker.ledger import Ledger
from worker.ledger.tables import analysis_runs, run_attempts
from worker.scheduling import job_summary, runner_identity, start_rerun_job

from .helpers import job_runner, seed_results

CONVERSATIONS = int(os.environ.get("POSTHOC_RERUN_KILL_CONVERSATIONS", "100"))
REPO = Path(__file__).resolve().parents[3]


def test_a_rerun_killed_halfway_and_resumed_runs_each_conversation_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    catalog = Catalog.load()
    with Ledger.from_url(url) as ledger:
        ledger.migrate()
        old = seed_results(ledger, catalog, CONVERSATIONS)
        old_results = {r.run_id: r.model_dump_json() for r in ledger.results(old)}
        job = start_rerun_job(
            ledger, catalog, RerunSelection(analyzer="follow_ups"), default_model="m"
        )
        assert isinstance(job, JobSummary)
        assert job.selected == CONVERSATIONS

        errors = (tmp_path / "child.stderr").open("w")
        child = subprocess.Popen(  # noqa: S603 - our own test module
            [sys.executable, "-m", "tests.worker.scheduling.rerun_child", url, job.job_id],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            deadline = time.monotonic() + 120
            while job_summary(ledger, job.job_id).succeeded < CONVERSATIONS // 2:
                assert child.poll() is None, (tmp_path / "child.stderr").read_text()[-2000:]
                assert time.monotonic() < deadline, "the child never got halfway"
                time.sleep(0.02)
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=30)
            errors.close()
        killed = job_summary(ledger, job.job_id)
        assert killed.status == "running"
        assert killed.pending + killed.in_flight > 0, "killed too late to show anything"

        # The dead child is on this host: the resume sees it is gone and takes its runs over.
        resumed = asyncio.run(
            job_runner(ledger, catalog, concurrency=16, worker_id=runner_identity()).run(job.job_id)
        )

        assert resumed.status == "done"
        assert resumed.selected == resumed.recorded + resumed.skipped + resumed.pending
        assert (resumed.recorded, resumed.succeeded, resumed.pending) == (CONVERSATIONS,) * 2 + (0,)
        with ledger.engine.connect() as connection:
            reruns = connection.execute(
                sa.select(
                    analysis_runs.c.id, analysis_runs.c.conversation_pk, analysis_runs.c.cost_usd
                ).where(analysis_runs.c.trigger == "rerun")
            ).all()
            completions = Counter(
                connection.execute(
                    sa.select(run_attempts.c.run_id).where(run_attempts.c.outcome == "succeeded")
                ).scalars()
            )
        assert len(reruns) == CONVERSATIONS
        assert set(Counter(row.conversation_pk for row in reruns).values()) == {1}
        assert all(completions[row.id] == 1 for row in reruns), "a run completed twice"
        assert resumed.spent_usd == round(sum(row.cost_usd for row in reruns), 6)
        assert {r.run_id: r.model_dump_json() for r in ledger.results(old)} == old_results
