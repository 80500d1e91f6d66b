"""Inserting many rows in one statement whose text does not depend on how many there are.

A multi-row `INSERT ... VALUES (...), (...)` is new SQL for every number of rows: SQLAlchemy
renders it again, and psycopg parses every placeholder of it again (it caches only short
statements with few parameters). On the webhook intake's hot path, where each group commit
writes a different number of deliveries, that parsing was a quarter of the writer's CPU.

On PostgreSQL the rows travel instead as one JSON parameter that `jsonb_to_recordset` unpacks
into typed columns: one fixed statement per table and column set, compiled once, whose
parameters are serialised by the C JSON encoder. On SQLite (the embedded ledger, one writer)
it is the plain multi-row insert.

`RETURNING` rows come back in no promised order: callers match them by key.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Row

from worker.ledger._sql import upsert_insert


def insert_rows(
    connection: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    skip_conflicts_on: Sequence[str] = (),
    conflict_where: str | None = None,
    returning: Sequence[sa.ColumnElement[Any]] = (),
) -> list[Row[Any]]:
    """Insert `rows` (each with the same keys, column names of `table`).

    :param skip_conflicts_on: a unique index's columns: a row that would break it is not
        inserted (ON CONFLICT DO NOTHING).
    :param conflict_where: the predicate of a partial unique index, as it is written.
    :param returning: columns of the inserted rows to return.
    """
    if not rows:
        return []
    names = tuple(rows[0])
    if any(tuple(row) != names for row in rows):
        raise ValueError(f"insert_rows into {table.name}: every row must have the same keys")
    if connection.dialect.name == "postgresql":
        statement = _recordset_insert(
            table, names, tuple(skip_conflicts_on), conflict_where, tuple(returning)
        )
        result = connection.execute(statement, {"rows": json.dumps(rows, default=_json_value)})
    else:
        insert = upsert_insert(connection, table)
        if skip_conflicts_on:
            insert = insert.on_conflict_do_nothing(
                index_elements=list(skip_conflicts_on),
                index_where=None if conflict_where is None else sa.text(conflict_where),
            )
        result = connection.execute(
            insert.returning(*returning) if returning else insert, list(rows)
        )
    return list(result.all()) if returning else []


@functools.lru_cache(maxsize=64)
def _recordset_insert(
    table: sa.Table,
    names: tuple[str, ...],
    skip_conflicts_on: tuple[str, ...],
    conflict_where: str | None,
    returning: tuple[sa.ColumnElement[Any], ...],
) -> Any:
    """`INSERT INTO t (names) SELECT names FROM jsonb_to_recordset(:rows) AS r(name type, ...)`,
    built once per shape (SQLAlchemy then compiles it once)."""
    columns = [table.c[name] for name in names]
    record = (
        sa.func.jsonb_to_recordset(sa.cast(sa.bindparam("rows", type_=sa.Text), postgresql.JSONB))
        .table_valued(*(sa.column(column.name, column.type) for column in columns))
        .render_derived(name="incoming", with_types=True)
    )
    statement = postgresql.insert(table).from_select(
        list(names), sa.select(*(record.c[name] for name in names))
    )
    if skip_conflicts_on:
        statement = statement.on_conflict_do_nothing(
            index_elements=list(skip_conflicts_on),
            index_where=None if conflict_where is None else sa.text(conflict_where),
        )
    if returning:
        return statement.returning(*returning)
    return statement


def _json_value(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"a {type(value).__name__} cannot be written as a JSON record value")
