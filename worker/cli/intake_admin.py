"""`posthoc api-keys create|list|revoke` and `posthoc intake log`: tenant keys for the HTTP API,
and the webhook delivery log ("the analysis never ran" has an answer there)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from worker.cli.commands import app, load_settings
from worker.cli.run_batch import EXIT_FAILED
from worker.http import store
from worker.ledger import Ledger

keys_app = typer.Typer(help="API keys of tenants for `posthoc serve`.", no_args_is_help=True)
intake_app = typer.Typer(help="The HTTP intake's records.", no_args_is_help=True)
app.add_typer(keys_app, name="api-keys")
app.add_typer(intake_app, name="intake")


def _ledger() -> Ledger:
    settings = load_settings(quiet=True)
    ledger = Ledger.from_url(settings.database_url)
    ledger.migrate()
    return ledger


@keys_app.command("create")
def create_key(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant the key belongs to.")],
    label: Annotated[str | None, typer.Option(help="A note to recognise the key by.")] = None,
) -> None:
    """Create a key and print it once on stdout; only its hash is stored."""
    if not tenant.strip() or len(tenant) > 200:
        typer.echo("error: --tenant must be 1 to 200 characters", err=True)
        raise typer.Exit(2)
    ledger = _ledger()
    try:
        record, key = store.create_api_key(ledger, tenant.strip(), datetime.now(UTC), label)
    finally:
        ledger.dispose()
    typer.echo(key)
    typer.echo(f"created key {record.id} for tenant {record.tenant_id}", err=True)


@keys_app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
) -> None:
    """One line per key: id, tenant, created, revoked, label (never the key)."""
    ledger = _ledger()
    try:
        keys = store.list_api_keys(ledger, tenant)
    finally:
        ledger.dispose()
    for key in keys:
        revoked = key.revoked_at.isoformat() if key.revoked_at else "-"
        line = [key.id, key.tenant_id, key.created_at.isoformat(), revoked, key.label or ""]
        typer.echo("\t".join(line))


@keys_app.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument(help="The key's id (from `list`).")]) -> None:
    """Revoke a key; requests with it answer 401 from then on."""
    ledger = _ledger()
    try:
        revoked = store.revoke_api_key(ledger, key_id, datetime.now(UTC))
    finally:
        ledger.dispose()
    if not revoked:
        typer.echo(f"error: no live key with id {key_id[:40]!r}", err=True)
        raise typer.Exit(EXIT_FAILED)
    typer.echo(f"revoked {key_id}")


@intake_app.command("log")
def intake_log(
    source: Annotated[str | None, typer.Option(help="Only this webhook source.")] = None,
    status: Annotated[
        list[int] | None, typer.Option(help="Only these HTTP answers (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Webhook deliveries, newest first: time, source, event, signature, answer, runs."""
    ledger = _ledger()
    try:
        deliveries = store.list_deliveries(
            ledger, source=source, statuses=status or [], limit=limit
        )
    finally:
        ledger.dispose()
    for delivery in deliveries:
        if as_json:
            row = {**delivery.__dict__, "received_at": delivery.received_at.isoformat()}
            typer.echo(json.dumps(row, sort_keys=True))
            continue
        fields = [
            delivery.received_at.isoformat(),
            delivery.source,
            delivery.event_type or "-",
            delivery.event_id or "-",
            f"signature={delivery.signature}",
            str(delivery.status_code),
            delivery.outcome,
            ",".join(delivery.run_ids) or "-",
            delivery.detail or "",
        ]
        typer.echo("\t".join(fields))
