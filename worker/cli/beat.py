"""`posthoc beat`: fire `kind: schedule` files on Celery beat, one beat at a time per fleet.

Run as many as you like (one per host for availability): they share the ledger's beat lease,
one fires and the others wait to take over. `--once` runs one tick and exits (cron-style use,
and tests).
"""

from __future__ import annotations

import os
import signal
import socket
import uuid
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from analyzers.definitions.checks import check_definitions
from analyzers.definitions.loading import load_paths
from schemas.schedule import ScheduleSpec
from worker.catalog import Catalog
from worker.cli.commands import app, load_catalog, load_settings
from worker.cli.run_batch import ensure_parent, fail_usage
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.ledger import Ledger
    from worker.scheduling.rerun import JobRunner


def beat_identity() -> str:
    """Host, process and a random part: a restarted beat is a new owner of the lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def load_schedules(settings: Settings, catalog: Catalog, paths: list[Path]) -> list[ScheduleSpec]:
    """The schedules of `POSTHOC_SCHEDULE_DIRS` and `paths`, or a usage error listing every
    problem (file, line, field, rule)."""
    from worker.scheduling.actions import schedule_catalog_problems  # noqa: PLC0415

    sources = [*settings.schedule_dirs, *paths]
    if not sources:
        raise fail_usage(
            "no schedules: set POSTHOC_SCHEDULE_DIRS or name schedule files or folders"
        )
    loaded = load_paths(sources)
    problems = [str(problem) for problem in [*loaded.problems, *check_definitions(loaded)]]
    if loaded.analyzers or loaded.procedures or loaded.conversations:
        problems.append(
            "schedule folders hold analyzers, procedures or conversations: keep only "
            "kind: schedule files there (analyzers go in POSTHOC_ANALYZER_DIRS)"
        )
    schedules = [sourced.value for sourced in loaded.schedules]
    problems += schedule_catalog_problems(schedules, catalog)
    if problems:
        raise fail_usage(f"{len(problems)} problem(s) in schedules:\n" + "\n".join(problems))
    if not schedules:
        raise fail_usage(f"no kind: schedule files found in {[str(s) for s in sources]}")
    return schedules


@app.command()
def beat(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Schedule files or folders, besides POSTHOC_SCHEDULE_DIRS."),
    ] = None,
    once: Annotated[
        bool, typer.Option(help="Run one tick (if this beat gets the lease), exit.")
    ] = False,
) -> None:
    """Fire schedules (reruns, standalone analyzers) on Celery beat; one beat fires at a time."""
    from celery.beat import Service  # noqa: PLC0415

    from worker.engine.celery_app import create_celery, enqueue_with  # noqa: PLC0415
    from worker.ledger import Ledger  # noqa: PLC0415
    from worker.ledger.schedules import ScheduleLedger  # noqa: PLC0415
    from worker.scheduling.actions import ScheduleActions, rerun_starter  # noqa: PLC0415
    from worker.scheduling.beat import Beat  # noqa: PLC0415
    from worker.scheduling.celery_beat import LedgerScheduler  # noqa: PLC0415
    from worker.scheduling.job_executor import JobExecutor  # noqa: PLC0415

    settings = load_settings()
    if settings.beat_tick_seconds * 2 > settings.beat_lease_seconds:
        raise fail_usage(
            "POSTHOC_BEAT_TICK_SECONDS must be at most half of POSTHOC_BEAT_LEASE_SECONDS, so "
            "the lease is renewed before it expires"
        )
    catalog = load_catalog(settings)
    schedules = load_schedules(settings, catalog, paths or [])
    ensure_parent(settings.database_url)
    ensure_parent(settings.broker_url.removeprefix("sqla+"))
    ledger = Ledger.from_url(settings.database_url)
    ledger.migrate()
    celery = create_celery(settings)
    executor = JobExecutor(lambda: _job_runner(settings, ledger, catalog))
    actions = ScheduleActions(
        ledger,
        catalog,
        enqueue=enqueue_with(celery, ledger),
        max_attempts=settings.max_attempts,
        start_rerun=rerun_starter(ledger, catalog, default_model=settings.model, execute=executor),
    )
    scheduler = Beat(
        schedules,
        ScheduleLedger(ledger.engine),
        actions,
        owner=beat_identity(),
        lease_seconds=settings.beat_lease_seconds,
    )
    try:
        if once:
            report = scheduler.tick()
            for name, slot in [*report.fired, *report.finished]:
                typer.echo(f"fired\t{name}\t{slot.isoformat()}")
            for name, slot in report.failed:
                typer.echo(f"failed\t{name}\t{slot.isoformat()}")
            if not report.leader:
                typer.echo("another beat holds the lease; nothing fired", err=True)
            scheduler.release()
            return
        celery.conf.posthoc_beat = scheduler
        celery.conf.posthoc_beat_tick = settings.beat_tick_seconds
        # SIGTERM (a supervisor stopping the beat) ends the loop cleanly: the lease is
        # released for the next beat instead of expiring.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        Service(
            celery,
            scheduler_cls=LedgerScheduler,
            max_interval=max(1, int(settings.beat_tick_seconds)),
        ).start()
    finally:
        executor.close()
        ledger.dispose()


def _job_runner(settings: Settings, ledger: Ledger, catalog: Catalog) -> JobRunner:
    """A runner for one scheduled rerun job, with a model client of its own."""
    from worker.engine.runner import EngineConfig  # noqa: PLC0415
    from worker.engine.service import build_model  # noqa: PLC0415
    from worker.http_transport import HttpxTransport  # noqa: PLC0415
    from worker.scheduling.rerun import JobRunner, runner_identity  # noqa: PLC0415
    from worker.settings import tool_secrets  # noqa: PLC0415

    return JobRunner(
        ledger=ledger,
        catalog=catalog,
        model=build_model(settings),
        config=EngineConfig.from_settings(settings, runner_identity()),
        http=HttpxTransport(),
        secrets=tool_secrets(),
        concurrency=settings.concurrency,
        max_attempts=settings.max_attempts,
    )


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
