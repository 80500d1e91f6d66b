"""Alembic, configured in code: no alembic.ini, and the scripts found next to this package.

The migration scripts ship inside the installed package (`worker/migrations`), so `migrate()`
works from any working directory and from a wheel. To write a new revision during development:

    from alembic import command
    from worker.ledger.migrate import alembic_config
    command.revision(alembic_config(url="sqlite:///dev.sqlite3"), "what changed", autogenerate=True)
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

import worker.migrations

MIGRATIONS_DIR = Path(worker.migrations.__file__).resolve().parent

# Any fixed number: PostgreSQL serialises concurrent `migrate()` calls on this advisory lock, so
# two workers starting together do not both try to create the tables.
_MIGRATION_LOCK_KEY = 0x706F7374686F63  # "posthoc"


def alembic_config(connection: Connection | None = None, *, url: str | None = None) -> Config:
    """An Alembic config for the ledger; migrations run on `connection` if given, else on `url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # Revision ids are hex and may start with a digit; the prefix keeps file names importable.
    config.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Bring the schema to `revision` inside the caller's transaction; a no-op when it is there."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
    command.upgrade(alembic_config(connection), revision)


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None before the first migration."""
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships its migrations
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head
