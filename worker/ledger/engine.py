"""Engines for the two databases the ledger runs on, configured so the same code is safe on both.

SQLite (the embedded default) gets WAL, a busy timeout, foreign keys, and transactions that
SQLAlchemy begins itself: `BEGIN IMMEDIATE` for anything that writes, so two writers queue on the
busy timeout instead of one failing with "database is locked" when it upgrades a read lock.
PostgreSQL gets psycopg 3 and a pool sized to the threads that use it. A connection is pinged
on checkout only when it sat idle in the pool for `IDLE_PING_SECONDS` (the server or a proxy may
have dropped it meanwhile): a busy pool's connections were in use a moment ago, so pinging them
would add a round trip to every ledger call for nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from worker.ledger.errors import LedgerError

WRITE_OPTION = "posthoc_ledger_write"
"""Execution option marking a connection whose transaction will write (SQLite: BEGIN IMMEDIATE)."""

IDLE_PING_SECONDS = 30.0
"""A pooled PostgreSQL connection idle longer than this is pinged before it is handed out."""
DEFAULT_POOL_SIZE = 16
"""Connections kept open: one per I/O thread of a worker process (`LoopThread`)."""
_IDLE_SINCE = "posthoc_idle_since"

SUPPORTED = "sqlite:///path/to/file.sqlite3 or postgresql+psycopg://user@host/db"


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write, committed on leaving (SQLite takes its write lock at BEGIN,
    so two writers queue instead of one failing at its first write)."""
    with engine.connect() as connection:
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            yield connection


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that only reads."""
    with engine.connect() as connection, connection.begin():
        yield connection


def create_ledger_engine(
    url: str | URL, *, busy_timeout_seconds: float = 30.0, pool_size: int = DEFAULT_POOL_SIZE
) -> Engine:
    """An engine for the ledger at `url`; `postgresql://` means psycopg 3.

    `pool_size`: the threads that use the engine at once (PostgreSQL): every one keeps its
    connection, and a burst beyond it gets a few overflow connections instead of waiting.

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
        engine = sa.create_engine(parsed, pool_size=pool_size, max_overflow=max(4, pool_size // 4))
        _ping_after_idle(engine)
        return engine
    raise LedgerError(f"unsupported ledger database {_shown(parsed)}; use {SUPPORTED}")


def _ping_after_idle(engine: Engine) -> None:
    """Ping a connection on checkout only if it sat in the pool for `IDLE_PING_SECONDS`.

    SQLAlchemy's `pool_pre_ping` pings on every checkout: one more round trip per ledger call.
    A failed ping raises `DisconnectionError`, on which the pool discards the connection and
    hands out a fresh one (SQLAlchemy's "pessimistic disconnect handling", custom form).
    """

    def on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            if not dbapi_connection.autocommit:
                dbapi_connection.rollback()
        except Exception as error:
            raise sa.exc.DisconnectionError(f"idle connection is gone: {error}") from error

    sa.event.listen(engine, "checkin", on_checkin)
    sa.event.listen(engine, "checkout", on_checkout)


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
