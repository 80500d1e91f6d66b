"""`posthoc rerun` and `posthoc jobs list|show|cancel`: reruns as ledger jobs.

A rerun selects stored conversations, records a job and runs it in this process with a
progress bar; `--resume JOB` continues one whose process died. See `worker/scheduling/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from analyzers.definitions.versions import parse_selector
from analyzers.errors import ConfigError
from analyzers.model.profiles import BATCH_PRICE_FACTOR
from analyzers.model.protocol import ModelClient
from schemas.rerun import JobSummary, RerunSelection
from worker.catalog import Catalog
from worker.cli.commands import _console, _http, _model, app, load_catalog, load_settings
from worker.cli.run_batch import EXIT_FAILED, ensure_parent, fail_usage, no_model_message
from worker.engine.runner import EngineConfig
from worker.ledger import Ledger, LedgerError
from worker.ledger import jobs as job_store
from worker.ledger.jobs import JobLedger
from worker.scheduling import (
    DryRun,
    JobBusy,
    JobRunner,
    SelectionError,
    cancel_job,
    job_summary,
    runner_identity,
    start_rerun_job,
)
from worker.settings import Settings, tool_secrets

jobs_app = typer.Typer(help="Rerun jobs: list, show, cancel.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


def parse_time(option: str, value: str | None) -> datetime | None:
    """An ISO 8601 time (UTC when it names no offset), or a usage error naming the option."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail_usage(
            f"{option} must be an ISO 8601 time like 2026-11-30T12:00:00Z, got {value!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def build_selection(
    analyzer: str,
    *,
    since: str | None = None,
    until: str | None = None,
    tenant: str | None = None,
    agent: str | None = None,
    outcome: str | None = None,
    where: str | None = None,
    conversations: list[str] | None = None,
    failed_only: bool = False,
) -> RerunSelection:
    """The selection the options describe, or a usage error naming the bad option."""
    name, version = parse_selector(analyzer)
    try:
        return RerunSelection(
            analyzer=name,
            version=version,
            since=parse_time("--since", since),
            until=parse_time("--until", until),
            tenant=tenant,
            agent=agent,
            outcome=outcome,
            where=where,
            conversations=conversations or [],
            failed_only=failed_only,
        )
    except ValidationError as exc:
        details = "; ".join(
            f"--{'-'.join(str(p) for p in error['loc']) or 'selection'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise fail_usage(details) from None


@app.command()
def rerun(
    analyzer: Annotated[
        str | None, typer.Option("--analyzer", "-a", help="NAME (newest version) or NAME@VERSION.")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Conversations received at or after.")] = None,
    until: Annotated[str | None, typer.Option(help="Conversations received before.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent id.")] = None,
    outcome: Annotated[str | None, typer.Option(help="Only this outcome.")] = None,
    where: Annotated[str | None, typer.Option(help="CEL over the conversation.")] = None,
    conversation: Annotated[
        list[str] | None, typer.Option("--conversation", help="Conversation id (repeatable).")
    ] = None,
    failed_only: Annotated[
        bool, typer.Option("--failed-only", help="Where the analyzer's latest run failed.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count and estimate only; record nothing.")
    ] = False,
    budget_usd: Annotated[
        float | None, typer.Option("--budget-usd", min=0, help="Stop recording runs here.")
    ] = None,
    allow_writes: Annotated[
        bool, typer.Option("--allow-writes", help="Let HTTP tools write (dry-run otherwise).")
    ] = False,
    deliver: Annotated[
        bool, typer.Option("--deliver", help="Deliver the new results to the sinks.")
    ] = False,
    batch: Annotated[
        bool, typer.Option("--batch", help="Every model turn through Message Batches (half price).")
    ] = False,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Continue this job (its process died).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="With --resume: take over from another host.")
    ] = False,
    concurrency: Annotated[int | None, typer.Option(min=1, max=2000)] = None,
    simulate: Annotated[bool, typer.Option(help="Use posthoc's simulated model.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job summary as JSON.")] = False,
) -> None:
    """Run an analyzer again over stored conversations, as a job in the ledger.

    New results sit beside the old ones; nothing is overwritten. Prints the job summary
    (`--json`: job_id, selected, estimated_usd, recorded, skipped, spent_usd, ...).
    """
    if (analyzer is None) == (resume is None):
        raise fail_usage("give --analyzer NAME[@VERSION] for a new rerun, or --resume JOB")
    settings = load_settings(quiet=True)
    if not (dry_run or simulate) and settings.anthropic_api_key is None:
        raise fail_usage(no_model_message())
    catalog = load_catalog(settings)
    ensure_parent(settings.database_url)
    ledger = Ledger.from_url(settings.database_url)
    console = _console()
    try:
        ledger.migrate()
        if resume is not None:
            job_id = resume
            try:
                job_summary(ledger, job_id)
            except LedgerError as exc:
                raise fail_usage(str(exc)) from exc
        else:
            selection = build_selection(
                analyzer or "",  # given: checked above
                since=since,
                until=until,
                tenant=tenant,
                agent=agent,
                outcome=outcome,
                where=where,
                conversations=conversation,
                failed_only=failed_only,
            )
            try:
                started = start_rerun_job(
                    ledger,
                    catalog,
                    selection,
                    default_model=settings.model,
                    budget_usd=budget_usd,
                    allow_writes=allow_writes,
                    deliver=deliver,
                    batch=batch,
                    dry_run=dry_run,
                )
            except (ConfigError, SelectionError, ValueError) as exc:
                raise fail_usage(str(exc)) from exc
            if isinstance(started, DryRun):
                _print_dry_run(started, batch, as_json)
                return
            job_id = started.job_id
        summary = _execute(ledger, catalog, settings, job_id, concurrency, simulate, force, console)
    finally:
        ledger.dispose()
    _print_summary(summary, as_json)
    if summary.failed:
        raise typer.Exit(EXIT_FAILED)


def _execute(
    ledger: Ledger,
    catalog: Catalog,
    settings: Settings,
    job_id: str,
    concurrency: int | None,
    simulate: bool,
    force: bool,
    console: Console,
) -> JobSummary:
    first = job_summary(ledger, job_id)
    progress = Progress(
        TextColumn(f"rerun {job_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=first.selected == 0 or not console.is_terminal,
    )
    task = progress.add_task("runs", total=first.selected)

    def advance(summary: JobSummary) -> None:
        progress.update(task, completed=summary.selected - summary.pending - summary.in_flight)

    config = EngineConfig.from_settings(settings, runner_identity())
    if first.batch:
        config = dataclasses.replace(config, price_factor=BATCH_PRICE_FACTOR)
    with _job_model(simulate, settings, first.batch) as model, progress:
        runner = JobRunner(
            ledger=ledger,
            catalog=catalog,
            model=model,
            config=config,
            http=_http(),
            secrets=tool_secrets(),
            concurrency=concurrency or settings.concurrency,
            on_progress=advance,
            force=force,
            max_attempts=settings.max_attempts,
        )
        try:
            return asyncio.run(runner.run_and_close(job_id))
        except JobBusy as exc:
            raise fail_usage(str(exc)) from exc


def _job_model(
    simulate: bool, settings: Settings, batch: bool
) -> AbstractContextManager[ModelClient]:
    """The model a job runs with: through Message Batches when the job says `batch`."""
    if not batch:
        return _model(simulate, settings)
    if simulate:
        from worker.cli.demo import simulated_model  # noqa: PLC0415 - starts a server

        return simulated_model(batch=True)
    from analyzers.model.anthropic import build_batch_model  # noqa: PLC0415 - SDK import

    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
    return contextlib.nullcontext(
        build_batch_model(api_key=key, base_url=settings.anthropic_base_url)
    )


def _print_dry_run(dry: DryRun, batch: bool, as_json: bool) -> None:
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "job_id": None,
                    "dry_run": True,
                    "analyzer": dry.analyzer,
                    "analyzer_version": dry.analyzer_version,
                    "selected": dry.selected,
                    "estimated_usd": dry.estimated_batch_usd if batch else dry.estimated_usd,
                    "estimated_standard_usd": dry.estimated_usd,
                    "estimated_batch_usd": dry.estimated_batch_usd,
                    "estimate_per_run_usd": dry.estimate_per_run_usd,
                    "estimate_from": "stored_usage" if dry.from_stored_usage else "token_counts",
                    "recorded": 0,
                    "skipped": 0,
                    "spent_usd": 0.0,
                },
                sort_keys=True,
            )
        )
        return
    source = "stored usage of earlier runs" if dry.from_stored_usage else "token counts"
    typer.echo(
        f"dry run: {dry.selected} conversation(s) for {dry.analyzer}@{dry.analyzer_version}; "
        f"estimated ${dry.estimated_usd:.4f} (batch: ${dry.estimated_batch_usd:.4f}) "
        f"from {source}; nothing recorded"
    )


def _summary_json(summary: JobSummary) -> str:
    return json.dumps(summary.model_dump(mode="json"), sort_keys=True)


def _print_summary(summary: JobSummary, as_json: bool) -> None:
    if as_json:
        typer.echo(_summary_json(summary))
        return
    table = Table(title=f"rerun job {summary.job_id} ({summary.status})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in summary.model_dump(mode="json").items():
        if name != "job_id":
            table.add_row(name, "" if value is None else str(value))
    Console().print(table)


def open_ledger() -> Ledger:
    """The configured ledger, migrated; a usage error when there is none."""
    from worker.cli.commands import ensure_ledger_exists  # noqa: PLC0415

    settings = load_settings(quiet=True)
    ensure_ledger_exists(settings.database_url)
    ledger = Ledger.from_url(settings.database_url)
    ledger.migrate()
    return ledger


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Rerun jobs, newest first."""
    ledger = open_ledger()
    try:
        with JobLedger(ledger.engine).read() as connection:
            found = [
                job_store.summary(connection, job.id)
                for job in job_store.list_jobs(connection, limit)
            ]
    finally:
        ledger.dispose()
    if as_json:
        for summary in found:
            typer.echo(_summary_json(summary))
        return
    table = Table(title="posthoc rerun jobs")
    for column in ("job", "analyzer", "status", "selected", "recorded", "skipped", "USD"):
        table.add_column(column)
    for s in found:
        table.add_row(
            s.job_id,
            f"{s.analyzer}@{s.analyzer_version}",
            s.status,
            str(s.selected),
            str(s.recorded),
            str(s.skipped),
            f"{s.spent_usd:.4f}",
        )
    Console().print(table)


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One job's figures and selection."""
    ledger = open_ledger()
    try:
        with JobLedger(ledger.engine).read() as connection:
            job = job_store.get_job(connection, job_id)
            summary = job_store.summary(connection, job_id)
    except LedgerError as exc:
        raise fail_usage(str(exc)) from exc
    finally:
        ledger.dispose()
    if as_json:
        document = summary.model_dump(mode="json") | {
            "selection": job.selection,
            "requested_by": job.requested_by,
            "runner": job.runner,
            "created_at": job.created_at.isoformat(),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        }
        typer.echo(json.dumps(document, sort_keys=True))
        return
    _print_summary(summary, as_json=False)
    typer.echo(f"selection: {json.dumps(job.selection, sort_keys=True)}")
    typer.echo(f"requested by {job.requested_by}, created {job.created_at.isoformat()}")


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[str, typer.Argument(help="The job id.")]) -> None:
    """Stop a job recording new runs; the runs it already recorded still finish."""
    ledger = open_ledger()
    try:
        summary = cancel_job(ledger, job_id)
    except LedgerError as exc:
        raise fail_usage(str(exc)) from exc
    finally:
        ledger.dispose()
    typer.echo(f"job {job_id}: {summary.status}")
