"""`posthoc deliveries list|replay`: the delivery ledger from the command line.

`replay` puts dead (or delivered) deliveries back to pending; the worker's delivery sweeper
sends them (a replayed Slack delivery updates its message, a webhook keeps its `webhook-id`).
`--now` delivers them in this process instead.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from worker.cli.commands import app, load_settings
from worker.ledger import Ledger
from worker.ledger import deliveries as outbox
from worker.ledger.deliveries import DeliveryLedger, DeliveryRecord
from worker.settings import tool_secrets

deliveries_app = typer.Typer(help="The delivery ledger: list, replay.", no_args_is_help=True)
app.add_typer(deliveries_app, name="deliveries")

STATES = ("pending", "delivering", "delivered", "dead")


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"--since must be an ISO 8601 time like 2026-11-30T12:00:00Z, got {value!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def shown_destination(destination: str) -> str:
    """A destination fit to print: a URL keeps its scheme and host only, since webhook URLs
    (Slack's incoming webhooks above all) carry their secret in the path."""
    parts = urlsplit(destination)
    if parts.scheme and parts.netloc:
        return (
            f"{parts.scheme}://{parts.hostname}/…" if parts.path not in {"", "/"} else destination
        )
    return destination


def _as_json(record: DeliveryRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "run_id": record.run_id,
        "sink": record.sink,
        "destination": shown_destination(record.destination),
        "status": record.status,
        "attempts": record.attempts,
        "next_attempt_at": record.next_attempt_at.isoformat(),
        "dead_reason": record.dead_reason,
        "last_error": record.last_error,
        "created_at": record.created_at.isoformat(),
        "delivered_at": record.delivered_at.isoformat() if record.delivered_at else None,
    }


@deliveries_app.command("list")
def list_command(
    status: Annotated[str | None, typer.Option(help=f"One of {', '.join(STATES)}.")] = None,
    sink: Annotated[str | None, typer.Option(help="slack, webhook or jsonl.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Deliveries, newest first."""
    if status is not None and status not in STATES:
        raise typer.BadParameter(f"--status must be one of {list(STATES)}, got {status!r}")
    settings = load_settings(quiet=True)
    ledger = Ledger.from_url(settings.database_url)
    try:
        ledger.migrate()
        with DeliveryLedger(ledger.engine).read() as connection:
            rows = outbox.list_deliveries(connection, status=status, sink=sink, limit=limit)
    finally:
        ledger.dispose()
    if as_json:
        for record in rows:
            typer.echo(json.dumps(_as_json(record), sort_keys=True))
        return
    table = Table(title="posthoc deliveries")
    for column in ("id", "run", "sink", "destination", "status", "attempts", "reason"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.id,
            r.run_id,
            r.sink,
            shown_destination(r.destination),
            r.status,
            str(r.attempts),
            r.dead_reason or (r.last_error or "")[:60],
        )
    Console().print(table)


@deliveries_app.command("replay")
def replay_command(
    ids: Annotated[list[str] | None, typer.Argument(help="Delivery ids.")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Every dead delivery.")] = False,
    since: Annotated[
        str | None, typer.Option(help="Dead deliveries created at or after this time.")
    ] = None,
    now: Annotated[bool, typer.Option("--now", help="Deliver in this process too.")] = False,
) -> None:
    """Put deliveries back to pending: by id, every dead one (`--failed`), or dead ones
    created since a time (`--since`)."""
    chosen = [bool(ids), failed, since is not None]
    if sum(chosen) != 1:
        raise typer.BadParameter("give delivery ids, or --failed, or --since (exactly one)")
    settings = load_settings(quiet=True)
    ledger = Ledger.from_url(settings.database_url)
    try:
        ledger.migrate()
        store = DeliveryLedger(ledger.engine)
        with store.write() as connection:
            if ids:
                targets = list(ids)
            else:
                after = _parse_time(since) if since is not None else None
                targets = [
                    r.id
                    for r in outbox.list_deliveries(
                        connection, status="dead", since=after, limit=100_000
                    )
                ]
            replayed = outbox.replay(connection, store.now(), targets)
        unknown = sorted(set(ids or []) - set(replayed))
        typer.echo(f"replayed {len(replayed)} deliver{'y' if len(replayed) == 1 else 'ies'}")
        for delivery_id in unknown:
            typer.echo(f"not replayed (unknown, pending or in flight): {delivery_id}", err=True)
        if now and replayed:
            from worker.sinks.delivery import Deliverer  # noqa: PLC0415 - Slack SDK only if asked

            deliverer = Deliverer(store, settings, worker_id="cli-replay", secrets=tool_secrets())
            for delivery_id in replayed:
                outcome = deliverer.deliver(delivery_id)
                typer.echo(f"{delivery_id}: {outcome.status} {outcome.reason or ''}".rstrip())
    finally:
        ledger.dispose()
    if unknown:
        raise typer.Exit(1)
