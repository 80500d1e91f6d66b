"""Alembic environment: run migrations on the connection `worker.ledger.migrate` passes in.

With no connection (the `alembic` command line pointed at this folder with a URL), it opens an
engine configured exactly like the ledger's, or renders SQL in offline mode.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from worker.ledger.engine import WRITE_OPTION, create_ledger_engine
from worker.ledger.tables import metadata

config = context.config


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    if url is None:
        raise RuntimeError("no connection and no sqlalchemy.url: nothing to migrate")
    engine = create_ledger_engine(url)
    try:
        with engine.connect() as own:
            own.execution_options(**{WRITE_OPTION: True})
            with own.begin():
                _run_on(own)
    finally:
        engine.dispose()


_run()
