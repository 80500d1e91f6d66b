"""`posthoc serve`: the HTTP intake (webhooks, the tenant API, synchronous invocation)."""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING, Annotated

import structlog
import typer

from analyzers.errors import ConfigError
from worker.cli.commands import app, load_catalog, load_settings
from worker.cli.run_batch import ensure_parent, fail_usage
from worker.settings import Settings

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from worker.http.app import Intake

log = structlog.get_logger("posthoc.serve")

SWITCH_INTERVAL_SECONDS = 0.001
"""How often the interpreter lets another thread run (default 5 ms). The event loop maps and
matches deliveries while the group-commit writer waits on the database; at the default, the
writer waits up to 5 ms for the interpreter after every statement, and a batch's transaction
takes several times its own work."""


def build_intake(settings: Settings) -> Intake:
    """The app's dependencies from settings: ledger (migrated), catalog, sources, broker."""
    from worker.engine.celery_app import create_celery  # noqa: PLC0415
    from worker.engine.publishing import RunPublisher  # noqa: PLC0415
    from worker.http.app import Intake  # noqa: PLC0415
    from worker.http.sources import parse_sources  # noqa: PLC0415
    from worker.ledger import Ledger  # noqa: PLC0415
    from worker.procedure_source import sync_procedure_files  # noqa: PLC0415
    from worker.sinks.procedure_review import reviewer_from_settings  # noqa: PLC0415

    try:
        sources = parse_sources(settings.webhook_sources)
    except ConfigError as exc:
        raise fail_usage(str(exc)) from exc
    catalog = load_catalog(settings)
    ensure_parent(settings.database_url)
    ensure_parent(settings.broker_url.removeprefix("sqla+"))
    ledger = Ledger.from_url(settings.database_url)
    ledger.migrate()
    sync_procedure_files(ledger.procedures, catalog)
    celery = create_celery(settings)

    def broker_ready() -> bool:
        try:
            with celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception:  # any failure means not ready
            return False
        return True

    return Intake(
        ledger=ledger,
        catalog=catalog,
        # The app records each send in the ledger with the runs it recorded (one transaction
        # per batch of deliveries), then publishes the batch in one round trip.
        enqueue=RunPublisher(celery),
        sources=sources,
        max_body_bytes=settings.max_body_bytes,
        max_attempts=settings.max_attempts,
        broker_ready=broker_ready,
        slack_signing_secret=(
            settings.slack_signing_secret.get_secret_value()
            if settings.slack_signing_secret
            else None
        ),
        reviewer=reviewer_from_settings(settings, ledger.procedures),
        metrics_dir=settings.prometheus_multiproc_dir,
        procedure_cache_seconds=settings.procedure_cache_seconds,
    )


def app_from_settings() -> Starlette:
    """The app from the environment's settings: uvicorn's factory for each process of
    `posthoc serve --workers N` (the benchmark's too)."""
    from worker.http.app import create_app  # noqa: PLC0415

    settings = load_settings()
    start_tracing(settings, "posthoc-serve")
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    return create_app(build_intake(settings))


def start_tracing(settings: Settings, service: str) -> None:
    """OpenTelemetry for this process when `POSTHOC_TRACING` asks for it."""
    from worker.observability import tracing  # noqa: PLC0415

    try:
        tracing.configure(settings.tracing, service)
    except tracing.TracingUnavailable as exc:
        raise fail_usage(str(exc)) from exc


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8080,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes sharing the port.")
    ] = 1,
) -> None:
    """Serve webhooks and the API until interrupted (uvicorn; one process unless `--workers`)."""
    import uvicorn  # noqa: PLC0415

    from worker.http.app import create_app  # noqa: PLC0415
    from worker.ledger import Ledger  # noqa: PLC0415

    settings = load_settings()
    if workers == 1:
        start_tracing(settings, "posthoc-serve")
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        app_ = create_app(build_intake(settings))
        uvicorn.run(app_, host=host, port=port, log_config=None, access_log=False)
        return
    # Migrated once here, so the processes do not race to migrate; theirs is then a no-op.
    # Each process starts its own tracing and builds its own app (`app_from_settings`).
    ensure_parent(settings.database_url)
    with Ledger.from_url(settings.database_url) as ledger:
        ledger.migrate()
    from worker.http.processes import ServerProcesses, reuse_port_available  # noqa: PLC0415

    if not reuse_port_available():  # uvicorn's processes, sharing one socket
        uvicorn.run(
            "worker.cli.serve:app_from_settings",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
        )
        return
    try:
        processes = ServerProcesses(serve_on_socket, host, port, workers)
    except OSError as exc:
        raise fail_usage(f"--host/--port: cannot listen on {host}:{port}: {exc}") from exc
    processes.run(
        ready=lambda bound: log.info("serve.listening", host=host, port=bound, workers=workers)
    )


def serve_on_socket(sock: socket.socket) -> None:
    """One process of `posthoc serve --workers N`: the app from settings, served on `sock`."""
    import uvicorn  # noqa: PLC0415

    config = uvicorn.Config(
        "worker.cli.serve:app_from_settings", factory=True, log_config=None, access_log=False
    )
    uvicorn.Server(config).run(sockets=[sock])
