"""Work that is not one conversation arriving: reruns as jobs in the ledger, comparing two
versions of an analyzer (`diff`), schedules fired by `posthoc beat` (`beat.py`, `actions.py`,
`celery_beat.py`) and standalone runs over stored results (`standalone.py`).

The stable entry points for other modules (schedules start rerun jobs through these):
`RerunSelection` (what to rerun), `start_rerun_job` (select and record a job, or a dry run),
`JobRunner` / `run_job` (execute or resume one in this process), `job_summary`, `cancel_job`.
"""

from schemas.rerun import JobStatus, JobSummary, RerunSelection
from worker.scheduling.rerun import (
    DryRun,
    JobBusy,
    JobRunner,
    cancel_job,
    job_summary,
    run_job,
    runner_identity,
    start_rerun_job,
)
from worker.scheduling.selection import SelectionError

__all__ = [
    "DryRun",
    "JobBusy",
    "JobRunner",
    "JobStatus",
    "JobSummary",
    "RerunSelection",
    "SelectionError",
    "cancel_job",
    "job_summary",
    "run_job",
    "runner_identity",
    "start_rerun_job",
]
