"""The `posthoc` command line.

Exit codes: 0 when everything succeeded (or was skipped on purpose), 1 when anything failed or
was invalid, 2 for usage and configuration errors.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import signal
import sys
from contextlib import AbstractContextManager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.table import Table

from analyzers.definitions.checks import check_definitions
from analyzers.definitions.limits import use_limits
from analyzers.definitions.loading import load_paths
from analyzers.errors import ConfigError
from analyzers.model.protocol import ModelClient
from analyzers.tools.base import HttpTransport
from schemas import AnalysisResult, AnalyzerSpec, Conversation, Procedure
from worker.catalog import Catalog
from worker.cli.run_batch import EXIT_FAILED, execute_batch, fail_usage, no_model_message
from worker.observability.logging import configure_logging
from worker.settings import Settings

app = typer.Typer(
    name="posthoc",
    help="Run procedural agents on finished conversations and deliver their outputs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

AnalyzerOption = Annotated[
    list[str] | None,
    typer.Option(
        "--analyzer",
        "-a",
        help="Run only this analyzer (repeatable): NAME for its newest version, or NAME@VERSION.",
    ),
]
Inputs = Annotated[
    list[Path], typer.Argument(help="Conversation JSON or JSONL files, or folders of them.")
]


class SchemaName(StrEnum):
    """Contracts whose JSON Schema `posthoc schema` prints."""

    conversation = "conversation"
    analyzer = "analyzer"
    procedure = "procedure"
    result = "result"


SCHEMA_MODELS: dict[SchemaName, type[BaseModel]] = {
    SchemaName.conversation: Conversation,
    SchemaName.analyzer: AnalyzerSpec,
    SchemaName.procedure: Procedure,
    SchemaName.result: AnalysisResult,
}


def load_settings(*, quiet: bool = False) -> Settings:
    """Settings from the environment, or a usage error that names the bad variable.

    `quiet` (interactive batch commands) logs only warnings unless POSTHOC_LOG_LEVEL says
    otherwise: the progress bar and the summary table say what happened.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        details = "; ".join(
            f"POSTHOC_{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise fail_usage(f"invalid settings: {details}") from exc
    except SettingsError as exc:
        # A value that is not even parseable (a list setting that is not JSON): pydantic-settings
        # names the field in its message.
        raise fail_usage(f"invalid settings: {exc}") from exc
    level = "warning" if quiet and "log_level" not in settings.model_fields_set else None
    configure_logging(level or settings.log_level, settings.log_format)
    use_limits(settings.input_limits())
    return settings


def load_catalog(settings: Settings, extra_dirs: list[Path] | None = None) -> Catalog:
    """The analyzers and procedures for this process, or a usage error listing the problems."""
    try:
        return Catalog.load(
            [*settings.analyzer_dirs, *(extra_dirs or [])],
            settings.procedure_dirs,
            builtins=settings.builtin_analyzers,
        )
    except ConfigError as exc:
        raise fail_usage(str(exc)) from exc


def check_analyzer_names(catalog: Catalog, names: list[str] | None) -> None:
    """A usage error naming the known analyzers when `--analyzer` names an unknown one."""
    try:
        catalog.select(names)
    except ConfigError as exc:
        raise fail_usage(str(exc)) from exc


@app.command()
def validate(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Analyzer and procedure YAML, conversation JSON/JSONL, or folders."),
    ],
) -> None:
    """Check definitions and conversations; print one line per problem.

    Exits 0 when everything is valid, 1 when anything is not.
    """
    loaded = load_paths(paths, load_settings(quiet=True).input_limits())
    problems = loaded.problems + check_definitions(loaded)
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        typer.echo(f"{len(problems)} problem(s) found", err=True)
        raise typer.Exit(EXIT_FAILED)
    typer.echo(
        f"ok: {len(loaded.analyzers)} analyzer(s), {len(loaded.procedures)} procedure(s), "
        f"{len(loaded.conversations)} conversation(s)"
    )


@app.command()
def schema(name: Annotated[SchemaName, typer.Argument(help="Which contract.")]) -> None:
    """Print the JSON Schema of a contract, for editors and other tools."""
    document = SCHEMA_MODELS[name].model_json_schema(mode="validation")
    document = {"$schema": "https://json-schema.org/draft/2020-12/schema", **document}
    typer.echo(json.dumps(document, indent=2, sort_keys=True))


@app.command()
def run(
    inputs: Inputs,
    analyzer: AnalyzerOption = None,
    out: Annotated[Path | None, typer.Option(help="Write AnalysisResult JSONL here.")] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=2000, help="Analyses in flight (default: settings).")
    ] = None,
    analyzers_dir: Annotated[
        list[Path] | None, typer.Option("--analyzers-dir", help="More analyzer/procedure YAML.")
    ] = None,
    simulate: Annotated[
        bool, typer.Option(help="Use posthoc's simulated model instead of Claude.")
    ] = False,
    deliver: Annotated[
        bool, typer.Option(help="Deliver results to the analyzers' sinks (Slack, webhooks).")
    ] = True,
) -> None:
    """Analyse conversations now, in this process, on the embedded ledger (no broker), and
    deliver the results to their sinks (`--no-deliver` to skip)."""
    settings = load_settings(quiet=True)
    catalog = load_catalog(settings, analyzers_dir)
    check_analyzer_names(catalog, analyzer)
    if not simulate and settings.anthropic_api_key is None:
        raise fail_usage(no_model_message())
    console = _console()
    with _model(simulate, settings) as model:
        code = execute_batch(
            settings=settings,
            catalog=catalog,
            model=model,
            http=_http(),
            inputs=inputs,
            analyzer_names=analyzer,
            out=out,
            concurrency=concurrency or settings.concurrency,
            console=console,
            deliver=deliver,
        )
    raise typer.Exit(code)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where to write the results.")] = Path(
        "posthoc-data/demo-results.jsonl"
    ),
) -> None:
    """Run the example conversations through the whole pipeline.

    Without ANTHROPIC_API_KEY the model is simulated (and says so); with it, Claude runs.
    """
    from worker.cli.demo import EXAMPLES, REAL_BANNER, SIMULATED_BANNER, DemoSystems  # noqa: PLC0415

    settings = load_settings(quiet=True)
    if not EXAMPLES.is_dir():
        raise fail_usage(f"the examples folder {EXAMPLES} is missing; run from a source checkout")
    settings = settings.model_copy(update={"database_url": "sqlite:///posthoc-data/demo.sqlite3"})
    catalog = load_catalog(settings, [EXAMPLES / "analyzers", EXAMPLES / "procedures"])
    simulate = settings.anthropic_api_key is None
    console = _console()
    console.print(SIMULATED_BANNER if simulate else REAL_BANNER, style="bold yellow")
    with _model(simulate, settings) as model:
        code = execute_batch(
            settings=settings,
            catalog=catalog,
            model=model,
            http=DemoSystems(),
            inputs=[EXAMPLES / "conversations"],
            analyzer_names=None,
            out=out,
            concurrency=settings.concurrency,
            console=console,
            # The demo posts to Slack only when a bot token says where; never dead letters.
            deliver=settings.slack_bot_token is not None,
        )
    if simulate:
        console.print("Reminder: the model above was SIMULATED.", style="bold yellow")
    raise typer.Exit(code)


@app.command()
def submit(inputs: Inputs, analyzer: AnalyzerOption = None) -> None:
    """Persist conversations, record their runs and queue them for `posthoc worker`.

    Prints one line per run: run id, analyzer, conversation, status. Submitting the same
    conversation content again prints the runs recorded the first time. A conversation the
    ledger refuses is an input problem; the runs recorded before any failure are still queued.
    """
    from sqlalchemy.exc import DataError, IntegrityError  # noqa: PLC0415

    from worker.cli.run_batch import ensure_parent  # noqa: PLC0415
    from worker.engine.celery_app import create_celery, enqueue_with  # noqa: PLC0415
    from worker.intake import read_conversations, record  # noqa: PLC0415
    from worker.ledger import Ledger, RunRecord  # noqa: PLC0415
    from worker.procedure_source import sync_procedure_files  # noqa: PLC0415

    settings = load_settings()
    catalog = load_catalog(settings)
    check_analyzer_names(catalog, analyzer)
    loaded = read_conversations(inputs, settings.input_limits())
    for problem in loaded.problems:
        typer.echo(f"input problem: {problem}", err=True)
    ensure_parent(settings.database_url)
    ensure_parent(settings.broker_url.removeprefix("sqla+"))
    ledger = Ledger.from_url(settings.database_url)
    runs: list[tuple[Conversation, RunRecord]] = []
    refused = 0
    try:
        ledger.migrate()
        sync_procedure_files(ledger.procedures, catalog)
        for conversation in loaded.conversations:
            try:
                runs += record(
                    ledger,
                    catalog,
                    [conversation],
                    analyzers=analyzer,
                    trigger="cli",
                    max_attempts=settings.max_attempts,
                    idempotent=True,
                )
            except (DataError, IntegrityError) as exc:
                # The database's message quotes the row (transcript text): name the class only.
                refused += 1
                typer.echo(
                    f"input problem: conversation {conversation.conversation_id!r}: the ledger "
                    f"refused it ({type(exc.orig).__name__ if exc.orig else type(exc).__name__})",
                    err=True,
                )
    finally:
        # Whatever was recorded is queued, even when a later conversation broke the loop: a
        # recorded run must not wait for the sweeper to notice it. The sends are recorded in
        # the ledger, so the sweeper knows these messages exist.
        new_queued = [run.id for _, run in runs if run.status == "queued" and run.created]
        try:
            if new_queued:
                enqueue_with(create_celery(settings), ledger)(new_queued)
        finally:
            ledger.dispose()
    for conversation, run_record in runs:
        typer.echo(
            f"{run_record.id}\t{run_record.analyzer}\t{conversation.conversation_id}\t"
            f"{run_record.status}{'' if run_record.created else ' (already submitted)'}"
        )
    raise typer.Exit(EXIT_FAILED if loaded.problems or refused else 0)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=2000, help="Analyses in flight on this node.")
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=256,
            help="Worker processes, each with its share of the concurrency (default: the "
            "number of cores; POSTHOC_PROCESSES).",
        ),
    ] = None,
) -> None:
    """Consume runs from the configured broker, many analyses at once per process."""
    from celery import signals as celery_signals  # noqa: PLC0415

    from worker.cli.run_batch import ensure_parent  # noqa: PLC0415
    from worker.cli.serve import start_tracing  # noqa: PLC0415
    from worker.engine.celery_app import create_celery, worker_queues  # noqa: PLC0415
    from worker.engine.liveness import Liveness, Watchdog, serve_health  # noqa: PLC0415
    from worker.engine.supervisor import default_processes, die_with_parent  # noqa: PLC0415
    from worker.observability import metrics  # noqa: PLC0415

    settings = load_settings()
    load_catalog(settings)  # fail fast on bad definitions, before connecting anything
    ensure_parent(settings.database_url)
    ensure_parent(settings.broker_url.removeprefix("sqla+"))
    count = processes or settings.processes or default_processes()
    total = concurrency or settings.concurrency
    if settings.worker_index is None and count > 1:
        raise typer.Exit(_supervise(settings, count, total))
    if settings.worker_index is not None:
        die_with_parent()
    # `kill -USR2 <pid>` prints every thread's stack to stderr: how to see where a worker that
    # stopped consuming is stuck, without stopping it.
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    liveness = Liveness()
    celery = create_celery(settings, liveness=liveness)
    watchdog = Watchdog(
        liveness,
        exit_after=settings.not_consuming_exit_seconds,
        heartbeat_file=settings.heartbeat_file,
    )
    watchdog.start()
    # A warm shutdown stops consuming on purpose while analyses finish: not a reason to exit 75.
    celery_signals.worker_shutting_down.connect(
        lambda **_: setattr(liveness, "stopping", True), weak=False
    )
    metrics.configure_slots(total)
    start_tracing(settings, "posthoc-worker")
    health = None
    if settings.health_port is not None:
        health = serve_health(
            liveness,
            settings.health_host,
            settings.health_port,
            metrics_dir=settings.prometheus_multiproc_dir,
        )
    try:
        celery.worker_main(
            [
                "--quiet",  # no banner: every line the worker writes is a log record
                "worker",
                "--pool=threads",
                f"--concurrency={total}",
                f"--queues={','.join(worker_queues(celery))}",
                f"--loglevel={settings.log_level.upper()}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ]
        )
    finally:
        watchdog.stop()
        if health is not None:
            health.shutdown()


def _supervise(settings: Settings, processes: int, concurrency: int) -> int:
    """`posthoc worker --processes N` (N > 1): run N children (`worker/engine/supervisor.py`)."""
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from worker.engine.supervisor import (  # noqa: PLC0415
        Supervisor,
        concurrency_shares,
        metrics_directory,
        serve_node_health,
    )

    try:
        shares = concurrency_shares(concurrency, processes)
    except ValueError as error:
        raise fail_usage(f"--processes: {error}") from error

    def command(_index: int, share: int) -> list[str]:
        launch = "from worker.cli import main; main()"
        return [sys.executable, "-c", launch, "worker", "--processes=1", f"--concurrency={share}"]

    # The children read their settings as this process did, from the same environment, with
    # their index, heartbeat file and share set by the supervisor.
    supervisor = Supervisor(
        command,
        shares,
        environment=dict(os.environ),
        heartbeat_file=settings.heartbeat_file,
        metrics_dir=metrics_directory(settings.prometheus_multiproc_dir),
    )
    health = None
    if settings.health_port is not None:
        health = serve_node_health(supervisor, settings.health_host, settings.health_port)
    try:
        return supervisor.run()
    finally:
        if health is not None:
            health.shutdown()
            health.server_close()


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Runs by state, in total and per analyzer."""
    from worker.ledger import Ledger  # noqa: PLC0415

    settings = load_settings()
    ensure_ledger_exists(settings.database_url)
    ledger = Ledger.from_url(settings.database_url)
    try:
        ledger.migrate()
        totals = ledger.counts_by_status()
        by_analyzer = ledger.counts_by_analyzer()
        failed = ledger.list_runs(status="failed", limit=20)
        delivery_counts, disabled = _delivery_status(ledger)
    finally:
        ledger.dispose()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "total": totals,
                    "by_analyzer": by_analyzer,
                    "recent_failures": [
                        {
                            "run_id": r.id,
                            "analyzer": r.analyzer,
                            "error_type": r.error_type,
                            "error_message": r.error_message,
                        }
                        for r in failed
                    ],
                    "deliveries": delivery_counts,
                    "disabled_destinations": [
                        {"destination": d, "reason": why, "disabled_at": at.isoformat()}
                        for d, why, at in disabled
                    ],
                },
                indent=2,
                sort_keys=True,
            )
        )
        return
    states = ["queued", "running", "succeeded", "failed", "skipped"]
    table = Table(title="posthoc runs")
    table.add_column("analyzer")
    for state in states:
        table.add_column(state, justify="right")
    for name, counts in sorted(by_analyzer.items()):
        table.add_row(name, *(str(counts.get(state, 0)) for state in states))  # type: ignore[call-overload]
    table.add_row("total", *(str(totals.get(state, 0)) for state in states), style="bold")  # type: ignore[call-overload]
    console = Console()
    console.print(table)
    for r in failed:
        console.print(
            f"failed {r.id} {r.analyzer}: {r.error_type}: {r.error_message}", highlight=False
        )
    states_seen = ", ".join(f"{n} {state}" for state, n in sorted(delivery_counts.items()))
    console.print(f"deliveries: {states_seen or 'none'}", highlight=False)
    for destination, reason, _at in disabled:
        console.print(f"disabled destination {destination}: {reason}", highlight=False)


def _delivery_status(ledger: Any) -> tuple[dict[str, int], list[tuple[str, str, Any]]]:
    """Deliveries by state, and the destinations disabled (a webhook that answered 410)."""
    from worker.ledger import deliveries as outbox  # noqa: PLC0415

    with outbox.DeliveryLedger(ledger.engine).read() as connection:
        return outbox.counts_by_status(connection), outbox.disabled(connection)


@app.command()
def retry(
    run_ids: Annotated[list[str] | None, typer.Argument(help="Failed runs to retry.")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Retry every failed run.")] = False,
) -> None:
    """Put failed (dead-lettered) runs back on the queue with a fresh attempt budget."""
    from worker.engine.celery_app import create_celery, enqueue_with  # noqa: PLC0415
    from worker.ledger import Ledger, LedgerError  # noqa: PLC0415

    if bool(run_ids) == failed:
        raise fail_usage("give run ids or --failed, not both and not neither")
    settings = load_settings()
    ledger = Ledger.from_url(settings.database_url)
    try:
        ledger.migrate()
        requeued = ledger.requeue_failed(None if failed else run_ids)
        enqueue_with(create_celery(settings), ledger)(requeued)
    except LedgerError as exc:
        raise fail_usage(str(exc)) from exc
    finally:
        ledger.dispose()
    for run_id in requeued:
        typer.echo(f"{run_id}\tqueued")
    typer.echo(f"{len(requeued)} run(s) queued again", err=True)


def ensure_ledger_exists(database_url: str) -> None:
    """A usage error, naming the ledger looked for, when there is no ledger at `database_url`.

    Commands that only read must not create an empty ledger and report zeros from it.
    """
    import sqlalchemy as sa  # noqa: PLC0415
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    from worker.ledger import LedgerError, create_ledger_engine  # noqa: PLC0415

    try:
        url = make_url(database_url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise fail_usage("POSTHOC_DATABASE_URL is not a database URL") from exc
    shown = url.render_as_string(hide_password=True)
    hint = "set POSTHOC_DATABASE_URL to the ledger `posthoc submit` and `posthoc worker` use"
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in {"", ":memory:"} or not Path(database).is_file():
            raise fail_usage(f"no ledger found: looked for the SQLite file {database!r} ({hint})")
        return
    try:
        engine = create_ledger_engine(url)
    except LedgerError as exc:
        raise fail_usage(str(exc)) from exc
    try:
        with engine.connect() as connection:
            found = sa.inspect(connection).has_table("analysis_runs")
    except sa.exc.SQLAlchemyError as exc:
        raise fail_usage(f"cannot reach the ledger at {shown} ({type(exc).__name__})") from exc
    finally:
        engine.dispose()
    if not found:
        raise fail_usage(f"no ledger found: {shown} has no posthoc tables ({hint})")


def _console() -> Console:
    # Piped output has no terminal width; 120 columns keep the summary table readable in logs.
    return Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def _http() -> HttpTransport:
    from worker.http_transport import HttpxTransport  # noqa: PLC0415 - only commands that run

    return HttpxTransport()


def _model(simulate: bool, settings: Settings) -> AbstractContextManager[ModelClient]:
    """The simulated model (a local fake server, for its lifetime) or the configured one."""
    from worker.cli.demo import simulated_model  # noqa: PLC0415 - starts a server
    from worker.engine.service import build_model  # noqa: PLC0415 - loads the SDK

    return simulated_model() if simulate else contextlib.nullcontext(build_model(settings))


def main() -> None:
    """Entry point of the `posthoc` console script."""
    app()
