"""`posthoc diff`: how two versions of an analyzer agree, per output field, on the same
conversations (see `worker.scheduling.diff`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from worker.cli.commands import app
from worker.cli.rerun import open_ledger
from worker.cli.run_batch import fail_usage
from worker.ledger import LedgerError
from worker.ledger import jobs as job_store
from worker.ledger.jobs import JobLedger
from worker.scheduling.diff import diff_versions


@app.command()
def diff(
    analyzer: Annotated[str, typer.Option("--analyzer", "-a", help="The analyzer's name.")],
    from_version: Annotated[str, typer.Option("--from", help="The version compared from.")],
    to_version: Annotated[str, typer.Option("--to", help="The version compared to.")],
    job: Annotated[
        str | None, typer.Option("--job", help="Compare only the runs of this rerun job.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How two versions of an analyzer agree, per output field, and which conversations
    changed and how."""
    ledger = open_ledger()
    try:
        with JobLedger(ledger.engine).read() as connection:
            if job is not None:
                job_store.get_job(connection, job)
            report = diff_versions(connection, analyzer, from_version, to_version, job_id=job)
    except LedgerError as exc:
        raise fail_usage(str(exc)) from exc
    finally:
        ledger.dispose()
    if as_json:
        typer.echo(json.dumps(report.as_json(), sort_keys=True, default=str))
        return
    console = Console()
    table = Table(
        title=f"{analyzer}: {from_version} -> {to_version} on {report.compared} conversation(s)"
    )
    for column in ("field", "agree", "compared", "agreement"):
        table.add_column(column, justify="left" if column == "field" else "right")
    for agreement in report.fields:
        table.add_row(
            agreement.field,
            str(agreement.agree),
            str(agreement.compared),
            f"{agreement.rate:.1%}",
        )
    console.print(table)
    console.print(
        f"only {from_version}: {report.only_from}; only {to_version}: {report.only_to}; "
        f"changed: {len(report.changed)}",
        highlight=False,
    )
    for changed in report.changed[:50]:
        for change in changed.changes:
            console.print(
                f"  {changed.conversation_id} {change.field}: "
                f"{json.dumps(change.before, default=str)[:80]} -> "
                f"{json.dumps(change.after, default=str)[:80]}",
                highlight=False,
                markup=False,
            )
