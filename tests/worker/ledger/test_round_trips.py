"""Round trips to the database per analysis run, counted with SQLAlchemy's events: every
statement a cursor executes, and every BEGIN, COMMIT and ROLLBACK of a connection that is not in
autocommit (psycopg sends each as a query of its own). On PostgreSQL a run costs at most 6: the
claim (one statement returning the conversation), and the completion (BEGIN, the result and the
attempt row in one statement, the deliveries in two, COMMIT). One heartbeat renews every lease
a process holds in one statement. SQLite runs the same code in a few more, cheap, statements.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from analyzers.testing import ScriptedModel, reply, text, tool_call
from schemas import Conversation
from worker.catalog import Catalog
from worker.engine.runner import Engine, EngineConfig
from worker.intake import record
from worker.ledger import Ledger, ManualClock, RunPlan
from worker.ledger import engine as ledger_engine
from worker.ledger.tables import deliveries

MAX_ROUND_TRIPS_PER_RUN = 6
LEASE_SECONDS = 60.0
URGENT = {
    "priority": "urgent",
    "reason": "The customer was charged twice and wants the second charge refunded.",
    "suggested_action": "Refund the duplicate charge and email the customer today.",
}


class RoundTrips:
    """Counts what goes over the wire to the database while `counting()` is open."""

    def __init__(self, engine: sa.Engine) -> None:
        self.sent: list[str] = []
        self._on = False
        sa.event.listen(engine, "before_cursor_execute", self._statement)
        for name in ("begin", "commit", "rollback"):
            sa.event.listen(engine, name, self._transaction(name.upper()))

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if self._on:
            self.sent.append(statement.split(None, 1)[0].upper())

    def _transaction(self, what: str) -> Any:
        def count(connection: sa.Connection) -> None:
            autocommit = connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
            if self._on and not autocommit:
                self.sent.append(what)

        return count

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        self.sent.clear()
        self._on = True
        try:
            yield self.sent
        finally:
            self._on = False


def conversation(conversation_id: str) -> Conversation:
    return Conversation.model_validate(
        {
            "conversation_id": conversation_id,
            "tenant_id": "acme",
            "outcome": "escalated",
            "turns": [
                {"role": "user", "text": "I was billed twice for the same order."},
                {"role": "agent", "text": "I see both charges; billing will refund one."},
            ],
        }
    )


def engine_for(ledger: Ledger, catalog: Catalog, runs: int) -> Engine:
    turns = []
    for _ in range(runs):  # follow_ups: one urgent follow-up (routed to Slack), then done
        turns += [
            reply(tool_call("record_follow_up", {"value": URGENT, "evidence_turns": [0]})),
            reply(text("Recorded.")),
        ]
    return Engine(
        ledger=ledger,
        catalog=catalog,
        model=ScriptedModel(turns),
        config=EngineConfig(
            worker_id="host:1", default_model="claude-sonnet-5-5", lease_seconds=LEASE_SECONDS
        ),
        jitter=lambda: 0.0,
    )


def test_a_run_costs_at_most_six_round_trips_on_postgresql(ledger: Ledger) -> None:
    catalog = Catalog.load()
    recorded = record(
        ledger,
        catalog,
        [conversation("c-warm"), conversation("c-measured")],
        analyzers=["follow_ups"],
        trigger="cli",
        max_attempts=3,
        idempotent=False,
    )
    [warm, measured] = [run.id for _, run in recorded]
    engine = engine_for(ledger, catalog, runs=2)
    trips = RoundTrips(ledger.engine)
    # The first run of an analyzer reads its snapshot once; the process keeps it.
    assert asyncio.run(engine.process(warm)).status == "succeeded"

    with trips.counting() as sent:
        assert asyncio.run(engine.process(measured)).status == "succeeded"

    run = ledger.get_run(measured)
    assert (run.status, run.attempts, run.lease_owner) == ("succeeded", 1, None)
    assert run.input_tokens == 200  # the scripted model's two turns
    [attempt] = ledger.attempts(measured)
    assert attempt.outcome == "succeeded"
    assert [result.run_id for result in ledger.results([measured])] == [measured]
    with ledger.engine.connect() as connection:  # the urgent follow-up's delivery, pending
        routed = connection.execute(
            sa.select(deliveries.c.destination, deliveries.c.status).where(
                deliveries.c.run_id == measured
            )
        ).all()
    assert [tuple(row) for row in routed] == [("#escalations", "pending")]
    if ledger.engine.dialect.name == "postgresql":
        assert len(sent) <= MAX_ROUND_TRIPS_PER_RUN, sent
        assert sent.count("WITH") == 2, sent  # the claim, the completion
    else:  # SQLite: no limit (no network), but the same work gets done
        assert sent.count("INSERT") == 2, sent  # the attempt row, the delivery


def test_one_statement_renews_every_lease_the_process_holds(
    ledger: Ledger, clock: ManualClock
) -> None:
    ref = ledger.save_conversation(conversation("c-leases"))
    runs = ledger.record_runs(ref.pk, [RunPlan(f"a{i}", "1") for i in range(5)], trigger="cli")
    held = []
    for run in runs:
        claimed = ledger.claim(run.id, f"host:1:{run.id}", LEASE_SECONDS)
        assert claimed is not None
        held.append((run.id, claimed.worker_id, claimed.attempt))
    clock.advance(LEASE_SECONDS + 1)  # every lease ran out; one run is taken over
    taken = runs[0].id
    assert ledger.claim(taken, "other:9:x", LEASE_SECONDS) is not None
    trips = RoundTrips(ledger.engine)

    with trips.counting() as sent:
        renewed = ledger.renew_leases(held, LEASE_SECONDS)

    assert renewed == {run.id for run in runs[1:]}
    assert [verb for verb in sent if verb in {"UPDATE", "WITH"}][:1] == ["UPDATE"]
    assert sent.count("UPDATE") == 1 + 1  # all leases at once, then the lost one's note
    for run in runs[1:]:
        assert ledger.get_run(run.id).lease_expires_at == clock() + timedelta(seconds=LEASE_SECONDS)
    assert ledger.get_run(taken).lease_owner == "other:9:x"
    first, second = ledger.attempts(taken)
    assert (first.outcome, first.error_type) == ("lease_lost", "lease_lost")
    assert second.outcome is None


# Pooled server connections are PostgreSQL's: SQLite has no server to drop them.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_connection_the_server_dropped_while_idle_is_replaced_not_failed(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pre-ping on checkout, but a connection idle for `IDLE_PING_SECONDS` is pinged first:
    one the server closed meanwhile (restart, idle timeout, a proxy) is replaced, and the
    ledger call that checked it out succeeds."""
    with ledger.engine.connect() as connection:
        dropped = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    killer = sa.create_engine(ledger.engine.url, poolclass=NullPool)
    try:
        with killer.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_terminate_backend({int(dropped)})")
    finally:
        killer.dispose()
    monkeypatch.setattr(ledger_engine, "IDLE_PING_SECONDS", 0.0)

    assert ledger.counts_by_status()["queued"] == 0

    with ledger.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != dropped
