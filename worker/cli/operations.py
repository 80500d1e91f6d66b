"""`posthoc migrate` and `posthoc broker-config`: what a deployment runs besides the long-lived
processes (a migration job before a rollout; the broker's own configuration files)."""

from __future__ import annotations

from typing import Annotated

import typer

from worker.cli.commands import app, load_settings
from worker.cli.run_batch import ensure_parent, fail_usage


@app.command()
def migrate() -> None:
    """Bring the ledger's schema to this version's head, then exit (a deployment's one-shot
    job; `serve` and `worker` also migrate on start, so this only moves the wait earlier)."""
    from worker.ledger import Ledger  # noqa: PLC0415

    settings = load_settings()
    ensure_parent(settings.database_url)
    ledger = Ledger.from_url(settings.database_url)
    try:
        ledger.migrate()
        typer.echo(f"ledger at revision {ledger.schema_revision()}")
    finally:
        ledger.dispose()


@app.command("broker-config")
def broker_config(
    what: Annotated[
        str, typer.Argument(help="rabbitmq.conf, definitions.json (RabbitMQ) or redis.json.")
    ],
) -> None:
    """Print a broker configuration file derived from the settings (consumer timeout, dead
    letters, queue policy, visibility timeout), for the deployment to give the broker."""
    from worker.engine import broker_topology  # noqa: PLC0415

    settings = load_settings(quiet=True)
    try:
        typer.echo(broker_topology.render(settings, what), nl=False)
    except ValueError as exc:
        raise fail_usage(str(exc)) from exc
