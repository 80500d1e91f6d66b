"""`insert_rows`: many rows in one statement, the same on SQLite and PostgreSQL, and on
PostgreSQL one statement text whatever the number of rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from worker.ledger import Ledger
from worker.ledger.many_rows import insert_rows
from worker.ledger.tables import webhook_deliveries as deliveries

WHEN = datetime(2026, 11, 30, 7, 0, 1, 234567, tzinfo=UTC)


def delivery(event_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "received_at": WHEN,
        "source": "retell_main",
        "tenant_id": "acme",
        "event_type": "call_analyzed",
        "event_id": event_id,
        "signature": "valid",
        "status_code": 202,
        "outcome": "accepted",
        "detail": None,
        "run_ids": None,
    } | changes


def claim(ledger: Ledger, rows: list[dict[str, Any]]) -> list[str]:
    with ledger.transaction() as connection:
        returned = insert_rows(
            connection,
            deliveries,
            rows,
            skip_conflicts_on=["source", "event_id"],
            conflict_where="outcome = 'accepted'",
            returning=(deliveries.c.event_id,),
        )
    return sorted(row.event_id for row in returned)


def test_rows_are_written_as_given_and_conflicts_on_a_partial_index_are_skipped(
    ledger: Ledger,
) -> None:
    assert claim(ledger, [delivery("a"), delivery("b", run_ids=["r1", "r2"])]) == ["a", "b"]
    # "a" is accepted already: skipped; "c" is new; a rejected row is outside the partial index.
    assert claim(ledger, [delivery("a"), delivery("c")]) == ["c"]
    assert claim(ledger, [delivery("a", outcome="duplicate", status_code=200)]) == ["a"]
    with ledger.transaction() as connection:
        stored = {
            (row.event_id, row.outcome): row
            for row in connection.execute(sa.select(deliveries)).all()
        }
    assert sorted(stored) == [
        ("a", "accepted"),
        ("a", "duplicate"),
        ("b", "accepted"),
        ("c", "accepted"),
    ]
    b = stored[("b", "accepted")]
    assert b.run_ids == ["r1", "r2"]
    assert b.received_at.replace(tzinfo=b.received_at.tzinfo or UTC) == WHEN  # microseconds kept
    assert (b.status_code, b.detail, b.tenant_id) == (202, None, "acme")
    # None is SQL NULL in a JSON column (none_as_null), as with a plain insert.
    with ledger.transaction() as connection:
        nulls = connection.execute(
            sa.select(sa.func.count()).where(deliveries.c.run_ids.is_(None))
        ).scalar_one()
    assert nulls == 3


def test_rows_with_different_keys_are_refused(ledger: Ledger) -> None:
    with (
        ledger.transaction() as connection,
        pytest.raises(ValueError, match="webhook_deliveries: every row must have the same keys"),
    ):
        insert_rows(connection, deliveries, [delivery("a"), {"source": "s"}])


def test_a_time_zone_other_than_utc_is_kept_as_the_same_instant(ledger: Ledger) -> None:
    tokyo = WHEN.astimezone(timezone(timedelta(hours=9)))
    claim(ledger, [delivery("z", received_at=tokyo)])
    with ledger.transaction() as connection:
        stored = connection.execute(sa.select(deliveries.c.received_at)).scalar_one()
    assert stored.replace(tzinfo=stored.tzinfo or UTC) == WHEN


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_on_postgresql_the_statement_text_is_the_same_for_any_number_of_rows(
    ledger: Ledger,
) -> None:
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sa.event.listen(ledger.engine, "before_cursor_execute", seen)
    try:
        for size in (1, 3, 17):
            claim(ledger, [delivery(f"{size}-{n}") for n in range(size)])
    finally:
        sa.event.remove(ledger.engine, "before_cursor_execute", seen)
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 3
    assert len(set(inserts)) == 1
    assert "jsonb_to_recordset" in inserts[0]
