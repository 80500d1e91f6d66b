"""Engines for the two databases the ledger runs on, configured so the same code is safe on both.

SQLite (the embedded default) gets WAL, a busy timeout, foreign keys, and transactions that
SQLAlchemy begins itself: `BEGIN IMMEDIATE` for anything that writes, so two writers queue on the
busy timeout instead of one failing with "database is locked" when it upgrades a read lock.
PostgreSQL gets psycopg 3 and pre-pinged pooled connections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from worker.ledger.errors import LedgerError

WRITE_OPTION = "posthoc_ledger_write"
"""Execution option marking a connection whose transaction will write (SQLite: BEGIN IMMEDIATE)."""

SUPPORTED = "sqlite:///path/to/file.sqlite3 or postgresql+psycopg://user@host/db"


def create_ledger_engine(
    url: str | URL, *, busy_timeout_seconds: float = 30.0, pool_size: int = 10
) -> Engine:
    """An engine for the ledger at `url`; `postgresql://` means psycopg 3.

    A SQLite file's folder is created if missing. `sqlite://` (in memory) shares one connection
    and is only for single-threaded tests.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, busy_timeout_seconds)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.get_driver_name() != "psycopg":
            raise LedgerError(
                f"the ledger talks to PostgreSQL through psycopg 3, not {parsed.drivername!r}: "
                f"use postgresql+psycopg://... (got {_shown(parsed)})"
            )
        return sa.create_engine(
            parsed, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size
        )
    raise LedgerError(f"unsupported ledger database {_shown(parsed)}; use {SUPPORTED}")


def _shown(url: URL) -> str:
    return repr(url.render_as_string(hide_password=True))


def _sqlite_engine(url: URL, busy_timeout_seconds: float) -> Engine:
    database = url.database or ""
    in_memory = database in {"", ":memory:"} or url.query.get("mode") == "memory"
    if in_memory:
        engine = sa.create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"timeout": busy_timeout_seconds, "check_same_thread": False},
            pool_size=32,
            max_overflow=32,
        )
    busy_ms = int(busy_timeout_seconds * 1000)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see `on_begin`).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                # Readers never block the writer and the writer never blocks readers. Durability
                # stays at the default synchronous=FULL: a webhook we answered must survive a crash.
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    def on_begin(connection: Connection) -> None:
        writes = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    sa.event.listen(engine, "connect", on_connect)
    sa.event.listen(engine, "begin", on_begin)
    return engine
