"""`posthoc procedures list|show|approve|reject|delete|match|import|export|review`: the procedure
store (in the ledger) from the command line.

`import PATH...` is idempotent: an unchanged procedure is the version already stored, a changed
one a new version (admin-written ones approved at once, learned ones pending). `match` answers
seed 003's FindMatch: the procedure an agent has for a task, and why (the pattern, or the
description words). `export` writes YAML that `import` reads back unchanged. `review` posts the
Slack review message of pending versions (`worker.sinks.procedure_review`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from analyzers.procedures.store import (
    PROCEDURE_STATUSES,
    FoundMatch,
    ProcedureNotFound,
    ProcedureStatus,
    StoredProcedure,
)
from worker.cli.commands import app, load_settings
from worker.cli.run_batch import EXIT_FAILED
from worker.ledger import Ledger
from worker.ledger.procedures import LedgerProcedureStore
from worker.procedure_files import import_procedures, load_procedure_files

procedures_app = typer.Typer(
    help="The procedure store: list, show, approve, reject, delete, match, import, export.",
    no_args_is_help=True,
)
app.add_typer(procedures_app, name="procedures")

TenantOption = Annotated[str | None, typer.Option("--tenant", help="The tenant id.")]
AgentOption = Annotated[str | None, typer.Option("--agent", help="The agent id.")]
StatusOption = Annotated[
    str | None, typer.Option("--status", help=f"One of {', '.join(PROCEDURE_STATUSES)}.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Ids = Annotated[list[str], typer.Argument(help="Procedure ids (proc_...), as `list` shows them.")]


@contextmanager
def opened_store() -> Iterator[LedgerProcedureStore]:
    """The ledger's procedure store (migrated), closed afterwards."""
    settings = load_settings(quiet=True)
    ledger = Ledger.from_url(settings.database_url)
    try:
        ledger.migrate()
        yield ledger.procedures
    finally:
        ledger.dispose()


def as_json(stored: StoredProcedure) -> dict[str, Any]:
    """A stored version as printed by `--json`: its record and the procedure itself."""
    p = stored.procedure
    return {
        "id": stored.id,
        "name": p.name,
        "version": p.version,
        "status": stored.status,
        "tenant_id": p.tenant_id,
        "agent_id": p.agent_id,
        "shared": p.shared,
        "created_by": p.created_by,
        "support": list(stored.support),
        "created_at": stored.created_at.isoformat() if stored.created_at else None,
        "decided_at": stored.decided_at.isoformat() if stored.decided_at else None,
        "decided_by": stored.decided_by,
        "procedure": p.model_dump(mode="json", exclude_none=True),
    }


def _status(value: str | None) -> ProcedureStatus | None:
    if value is None:
        return None
    if value not in PROCEDURE_STATUSES:
        raise typer.BadParameter(
            f"--status must be one of {list(PROCEDURE_STATUSES)}, got {value!r}"
        )
    return value


@procedures_app.command("list")
def list_command(
    tenant: TenantOption = None,
    agent: AgentOption = None,
    status: StatusOption = None,
    name: Annotated[str | None, typer.Option(help="Only this procedure's versions.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Stored procedure versions: a tenant's own and every tenant's (`--tenant`), those an
    agent can see (`--agent`), by review state (`--status`)."""
    wanted = _status(status)
    with opened_store() as store:
        rows = store.list(tenant_id=tenant, agent_id=agent, status=wanted, name=name)
    if json_output:
        for stored in rows:
            typer.echo(json.dumps(as_json(stored), sort_keys=True))
        return
    table = Table(title="posthoc procedures")
    for column in ("id", "name", "version", "status", "tenant", "agent", "by", "support"):
        table.add_column(column)
    for s in rows:
        p = s.procedure
        table.add_row(
            s.id,
            p.name,
            str(p.version),
            s.status,
            p.tenant_id or "*",
            (p.agent_id or "*") + (" (shared)" if p.shared and p.agent_id else ""),
            p.created_by,
            str(len(s.support)),
        )
    Console().print(table)


@procedures_app.command("show")
def show_command(
    ref: Annotated[str, typer.Argument(help="A procedure id, or a name (its newest version).")],
    tenant: TenantOption = None,
    agent: AgentOption = None,
    version: Annotated[int | None, typer.Option(help="This version of a named procedure.")] = None,
    json_output: JsonOption = False,
) -> None:
    """One stored version: its record and the procedure as YAML (or all of it as `--json`)."""
    with opened_store() as store:
        stored = store.get(ref)
        if stored is None:
            versions = store.list(tenant_id=tenant, agent_id=agent, name=ref)
            if version is not None:
                versions = [s for s in versions if s.version == version]
            stored = max(versions, key=lambda s: s.version) if versions else None
    if stored is None:
        typer.echo(f"no stored procedure {ref!r}", err=True)
        raise typer.Exit(EXIT_FAILED)
    if json_output:
        typer.echo(json.dumps(as_json(stored), sort_keys=True, indent=2))
        return
    record = as_json(stored)
    body = record.pop("procedure")
    for key in ("id", "name", "version", "status", "tenant_id", "agent_id", "shared"):
        typer.echo(f"{key}: {record[key]}")
    for key in ("created_by", "created_at", "decided_at", "decided_by"):
        typer.echo(f"{key}: {record[key]}")
    typer.echo(f"support: {len(stored.support)} conversation(s) {list(stored.support)}")
    typer.echo("---")
    typer.echo(yaml.safe_dump(body, sort_keys=False, allow_unicode=True).rstrip())


def _decide(ids: list[str], tenant: str | None, action: str) -> None:
    missing = []
    with opened_store() as store:
        for procedure_id in ids:
            try:
                if action == "approve":
                    stored = store.approve(procedure_id, tenant_id=tenant, by="cli")
                elif action == "reject":
                    stored = store.reject(procedure_id, tenant_id=tenant, by="cli")
                else:
                    stored = store.delete(procedure_id, tenant_id=tenant)
            except ProcedureNotFound:
                missing.append(procedure_id)
                continue
            state = "deleted" if action == "delete" else stored.status
            typer.echo(f"{stored.id}: {stored.name} v{stored.version} {state}")
    for procedure_id in missing:
        where = f" of tenant {tenant!r}" if tenant else ""
        typer.echo(f"no stored procedure {procedure_id!r}{where}", err=True)
    if missing:
        raise typer.Exit(EXIT_FAILED)


@procedures_app.command("approve")
def approve_command(ids: Ids, tenant: TenantOption = None) -> None:
    """Approve versions: they become active (the newest approved version of a name is used)."""
    _decide(ids, tenant, "approve")


@procedures_app.command("reject")
def reject_command(ids: Ids, tenant: TenantOption = None) -> None:
    """Reject versions: they are kept, never used."""
    _decide(ids, tenant, "reject")


@procedures_app.command("delete")
def delete_command(ids: Ids, tenant: TenantOption = None) -> None:
    """Delete versions and their support."""
    _decide(ids, tenant, "delete")


def match_json(found: FoundMatch) -> dict[str, Any]:
    """FindMatch's answer as `match --json` prints it."""
    return {
        "id": found.stored.id,
        "name": found.stored.name,
        "version": found.stored.version,
        "path": found.match.path,
        "pattern": found.match.pattern,
        "shared_words": list(found.match.shared_words),
        "reason": found.match.reason,
    }


@procedures_app.command("match")
def match_command(
    task: Annotated[str, typer.Argument(help='The task, e.g. "Onboard the new vendor TechCorp".')],
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant id.")],
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """The approved procedure this agent has for the task, and why (exit 1 when none)."""
    with opened_store() as store:
        found = store.find_match(task, tenant_id=tenant, agent_id=agent)
    if found is None:
        if json_output:
            typer.echo(json.dumps(None))
        else:
            typer.echo(f"no approved procedure of tenant {tenant!r} matches the task", err=True)
        raise typer.Exit(EXIT_FAILED)
    if json_output:
        typer.echo(json.dumps(match_json(found), sort_keys=True))
        return
    typer.echo(f"{found.stored.name} v{found.stored.version} ({found.stored.id})")
    typer.echo(f"matched by {found.match.path}: {found.match.reason}")


@procedures_app.command("import")
def import_command(
    paths: Annotated[list[Path], typer.Argument(help="Procedure YAML or markdown, or folders.")],
    tenant: TenantOption = None,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Store procedures from files; importing the same files again changes nothing."""
    loaded = load_procedure_files(paths, tenant_id=tenant, agent_id=agent)
    for problem in loaded.problems:
        typer.echo(str(problem), err=True)
    if not loaded.procedures and loaded.problems:
        typer.echo(f"{len(loaded.problems)} problem(s); nothing imported", err=True)
        raise typer.Exit(EXIT_FAILED)
    with opened_store() as store:
        outcomes = import_procedures(store, [item.value for item in loaded.procedures])
    for item, outcome in zip(loaded.procedures, outcomes, strict=True):
        s = outcome.stored
        if json_output:
            line = {"file": item.file, "created": outcome.created, **as_json(s)}
            line.pop("procedure")
            typer.echo(json.dumps(line, sort_keys=True))
        else:
            what = "imported" if outcome.created else "unchanged"
            typer.echo(f"{what}: {s.name} v{s.version} {s.status} ({s.id}) from {item.file}")
    if loaded.problems:
        raise typer.Exit(EXIT_FAILED)


@procedures_app.command("export")
def export_command(
    tenant: TenantOption = None,
    agent: AgentOption = None,
    status: StatusOption = None,
    name: Annotated[str | None, typer.Option(help="Only this procedure's versions.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Stored procedures as YAML documents (or JSON lines), fit for `import`."""
    wanted = _status(status)
    with opened_store() as store:
        rows = store.list(tenant_id=tenant, agent_id=agent, status=wanted, name=name)
    documents = [s.procedure.model_dump(mode="json", exclude_none=True) for s in rows]
    if json_output:
        for document in documents:
            typer.echo(json.dumps(document, sort_keys=True))
        return
    typer.echo(
        yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True, explicit_start=True),
        nl=False,
    )


@procedures_app.command("review")
def review_command(
    tenant: TenantOption = None,
    channel: Annotated[
        str | None, typer.Option(help="Slack channel (default POSTHOC_PROCEDURE_REVIEW_CHANNEL).")
    ] = None,
) -> None:
    """Post the Slack review message (Approve / Reject buttons) of every pending procedure
    version that has none yet; one already posted is not posted again."""
    from worker.sinks.procedure_review import ProcedureReviewer  # noqa: PLC0415 - Slack SDK
    from worker.sinks.slack import web_client  # noqa: PLC0415

    settings = load_settings(quiet=True)
    target = channel or settings.procedure_review_channel
    if settings.slack_bot_token is None or not target:
        typer.echo(
            "error: set POSTHOC_SLACK_BOT_TOKEN and POSTHOC_PROCEDURE_REVIEW_CHANNEL "
            "(or --channel)",
            err=True,
        )
        raise typer.Exit(2)
    client = web_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    with opened_store() as store:
        outcomes = ProcedureReviewer(store, client, target).request_pending(tenant)
    for outcome in outcomes:
        reason = f" ({outcome.reason})" if outcome.reason else ""
        typer.echo(f"{outcome.procedure_id}: {outcome.status}{reason}")
    if any(o.status in ("retry_later", "undeliverable") for o in outcomes):
        raise typer.Exit(EXIT_FAILED)
