"""`posthoc run` and `posthoc demo`: the whole pipeline in one process, on the embedded ledger."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from analyzers.definitions.loading import Problem
from analyzers.model.protocol import ModelClient
from analyzers.tools.base import HttpTransport
from schemas.result import AnalysisResult
from worker.catalog import Catalog
from worker.engine.batch import collect_results, process_all, summarize
from worker.engine.learning import review_requester
from worker.engine.runner import Engine, EngineConfig, ProcessOutcome
from worker.engine.service import worker_identity
from worker.intake import read_conversations, record
from worker.ledger import Ledger
from worker.ledger.deliveries import DeliveryLedger, hold_back, use_routes
from worker.procedure_source import sync_procedure_files
from worker.settings import Settings, tool_secrets
from worker.sinks.delivery import Deliverer, routes_from_catalog

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def execute_batch(
    *,
    settings: Settings,
    catalog: Catalog,
    model: ModelClient,
    http: HttpTransport | None,
    inputs: Sequence[Path],
    analyzer_names: Sequence[str] | None,
    out: Path | None,
    concurrency: int,
    console: Console,
    deliver: bool = True,
) -> int:
    """Read, record, run and report a batch, then deliver its results (unless `deliver` is
    False: then its deliveries are recorded as held back, dead until replayed); returns the
    exit code."""
    loaded = read_conversations(inputs, settings.input_limits())
    _print_problems(console, loaded.problems)
    if not loaded.conversations and not loaded.problems:
        console.print("[yellow]no conversations found in the inputs[/yellow]")
        return EXIT_USAGE
    ensure_parent(settings.database_url)
    ledger = Ledger.from_url(settings.database_url)
    try:
        ledger.migrate()
        sync_procedure_files(ledger.procedures, catalog)
        runs = record(
            ledger,
            catalog,
            loaded.conversations,
            analyzers=analyzer_names,
            trigger="cli",
            max_attempts=settings.max_attempts,
            idempotent=False,
            settle=False,  # analysed now, in this process: nothing to wait for
        )
        queued = [run.id for _, run in runs if run.status == "queued"]
        use_routes(routes_from_catalog(catalog) if deliver else None)
        engine = Engine(
            ledger=ledger,
            catalog=catalog,
            model=model,
            http=http,
            secrets=tool_secrets(),
            # No start jitter: one batch in one process has no fleet's bursts to spread.
            config=dataclasses.replace(
                EngineConfig.from_settings(settings, worker_identity()), start_jitter_seconds=0.0
            ),
            request_reviews=review_requester(settings, ledger),
        )
        with _progress(console, len(queued)) as advance:
            asyncio.run(_process_and_close(engine, queued, concurrency, advance))
        results = collect_results(ledger, runs)
        if deliver:
            deliver_in_process(ledger, settings, queued, console)
        else:
            store = DeliveryLedger(ledger.engine)
            with store.write() as connection:
                held = hold_back(connection, store.now(), queued, "held_back:--no-deliver")
            if held:
                console.print(
                    f"deliveries: {held} held back (--no-deliver); "
                    "`posthoc deliveries replay --failed` sends them",
                    highlight=False,
                )
    finally:
        use_routes(None)
        ledger.dispose()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as file:
            for result in results:
                file.write(result.model_dump_json() + "\n")
    _print_summary(console, results, out)
    failed = any(result.status == "failed" for result in results) or bool(loaded.problems)
    return EXIT_FAILED if failed else EXIT_OK


def deliver_in_process(
    ledger: Ledger, settings: Settings, run_ids: Sequence[str], console: Console
) -> None:
    """Deliver the runs' results now, in this process, and say how it went."""
    deliverer = Deliverer(
        DeliveryLedger(ledger.engine),
        settings,
        worker_id=f"{worker_identity()}:cli",
        secrets=tool_secrets(),
    )
    outcomes = [o for run_id in run_ids for o in deliverer.deliver_run(run_id)]
    if not outcomes:
        return
    counts = Counter(o.status for o in outcomes)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    console.print(f"deliveries: {summary}", highlight=False)
    for outcome in outcomes:
        if outcome.status == "dead":
            console.print(f"  dead {outcome.delivery_id}: {outcome.reason}", highlight=False)


async def _process_and_close(
    engine: Engine,
    run_ids: Sequence[str],
    concurrency: int,
    advance: Callable[[str, ProcessOutcome], None],
) -> None:
    # Clients are bound to the event loop they first ran on: close them on that loop.
    try:
        await process_all(engine, run_ids, concurrency=concurrency, on_done=advance)
    finally:
        for resource in (engine.model, engine.http):
            aclose = getattr(resource, "aclose", None)
            if aclose is not None:
                await aclose()


@contextlib.contextmanager
def _progress(console: Console, total: int) -> Iterator[Callable[[str, ProcessOutcome], None]]:
    progress = Progress(
        TextColumn("analysing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=total == 0,
    )
    task = progress.add_task("runs", total=total)

    def advance(_run_id: str, _outcome: ProcessOutcome) -> None:
        progress.advance(task)

    with progress:
        yield advance


def _print_problems(console: Console, problems: Sequence[Problem]) -> None:
    for problem in problems:
        console.print(f"[red]input problem:[/red] {problem}", highlight=False)


def _print_summary(console: Console, results: Sequence[AnalysisResult], out: Path | None) -> None:
    table = Table(
        title="posthoc run (tokens: prompt, output, and prompt tokens read from cache)",
        show_footer=True,
    )
    totals = summarize(results)
    grand = [
        sum(getattr(t, field) for t in totals.values())
        for field in (
            "succeeded",
            "failed",
            "skipped",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cost_usd",
        )
    ]
    columns = ["analyzer", "ok", "failed", "skipped", "prompt", "output", "cached", "USD"]
    footers = ["total", *[str(int(value)) for value in grand[:-1]], f"{grand[-1]:.4f}"]
    for name, footer in zip(columns, footers, strict=True):
        is_name = name == "analyzer"
        table.add_column(name, footer=footer, justify="left" if is_name else "right", no_wrap=True)
    for analyzer, t in totals.items():
        table.add_row(
            analyzer,
            str(t.succeeded),
            str(t.failed),
            str(t.skipped),
            str(t.input_tokens),
            str(t.output_tokens),
            str(t.cache_read_tokens),
            f"{t.cost_usd:.4f}",
        )
    console.print(table)
    failures = [r for r in results if r.status == "failed"]
    for result in failures[:10]:
        error = result.error
        console.print(
            f"[red]failed[/red] {result.analyzer} on {result.conversation_id} "
            f"(run {result.run_id}): {error.type if error else '?'}: "
            f"{error.message if error else ''}",
            highlight=False,
        )
    if len(failures) > 10:
        console.print(f"... and {len(failures) - 10} more failed runs (see `posthoc status`)")
    if out is not None:
        console.print(f"results: {out}")


def ensure_parent(database_url: str) -> None:
    # The embedded ledger lives in a file under ./posthoc-data by default: create the folder.
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def no_model_message() -> str:
    """What to do when no model is configured."""
    return (
        "no model is configured: set ANTHROPIC_API_KEY to use Claude, or add --simulate to run "
        "against posthoc's simulated model (as `posthoc demo` does)"
    )


def fail_usage(message: str) -> typer.Exit:
    """Print a usage/config error and return the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_USAGE)
