# ruff: noqa: F811
"""Group commit of webhook deliveries: one transaction for many requests, dedupe on the event
identity within a batch and across batches (the database's unique index, not a pre-read), and a
failing item that fails alone while the rest of its batch is recorded. On SQLite and on
PostgreSQL (the ledger fixtures of `tests/worker/ledger`)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.worker.http.payloads import retell_payload

# The ledger tests' fixtures, so that `ledger` here is SQLite and PostgreSQL (emptied for each
# test) rather than this directory's SQLite one. (Test functions naming `ledger` shadow the
# import: that is how pytest fixtures are used, hence F811 off for this file.)
from tests.worker.ledger.conftest import clock, database_url, ledger, postgres_url  # noqa: F401
from worker.catalog import Catalog
from worker.http.adapters import Mapped, parse_payload
from worker.http.group_commit import CommitHooks, GroupCommit
from worker.http.recording import Accept, Answer, Delivery, DeliveryWriter, LogEntry, LogOnly
from worker.ledger import Ledger
from worker.ledger.bulk import RunsToRecord
from worker.ledger.tables import (
    analysis_runs,
    analyzer_snapshots,
    conversations,
    webhook_deliveries,
)


class Commits:
    """Counts committed transactions, and can hold the writer before its next commit."""

    def __init__(self) -> None:
        self.count = 0
        self.gate = threading.Event()
        self.gate.set()

    def before(self) -> None:
        self.gate.wait(10)

    def after(self) -> None:
        self.count += 1

    def hooks(self) -> CommitHooks:
        return CommitHooks(before_commit=self.before, after_commit=self.after)


class Sent(list[str]):
    def __call__(self, answers: Sequence[Answer]) -> None:
        self.extend(run_id for answer in answers for run_id in answer.to_send)


@pytest.fixture
def commits() -> Commits:
    return Commits()


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def writer(ledger: Ledger, commits: Commits, sent: Sent) -> Iterator[GroupCommit[Delivery, Answer]]:
    group: GroupCommit[Delivery, Answer] = GroupCommit(
        ledger,
        DeliveryWriter(ledger),
        after_commit=sent,
        max_batch=16,
        max_wait_seconds=0.5,  # long enough that everything submitted at once is one batch
        hooks=commits.hooks(),
    )
    yield group
    group.close()


def delivery(catalog: Catalog, call_id: str, *, source: str = "rt", text: str = "") -> Accept:
    payload = retell_payload(call_id)
    if text:
        payload["call"]["transcript_with_tool_calls"][0]["content"] = text
    mapped = parse_payload("retell", payload, {}, tenant="acme")
    assert isinstance(mapped, Mapped)
    log = LogEntry(
        received_at=datetime.now(UTC),
        source=source,
        tenant_id="acme",
        event_type=mapped.event_type,
        event_id=mapped.event_id,
        signature="valid",
        status_code=202,
        outcome="accepted",
    )
    plans = catalog.plan(mapped.conversation, None, 5)
    return Accept(log, RunsToRecord(mapped.conversation, plans, "webhook"))


def submit_together(
    writer: GroupCommit[Delivery, Answer], items: Sequence[Delivery]
) -> list[Answer | BaseException]:
    futures: list[Future[Answer]] = [writer.submit_nowait(item) for item in items]
    outcomes: list[Answer | BaseException] = []
    for future in futures:
        error = future.exception(timeout=30)
        outcomes.append(error if error is not None else future.result())
    return outcomes


def rows(ledger: Ledger, table: sa.Table) -> list[sa.Row[object]]:
    with ledger.engine.connect() as connection:
        return list(connection.execute(sa.select(table)).all())


def test_a_batch_is_one_transaction_and_each_delivery_gets_its_runs(
    writer: GroupCommit[Delivery, Answer],
    catalog: Catalog,
    ledger: Ledger,
    commits: Commits,
    sent: Sent,
) -> None:
    items = [delivery(catalog, f"call-{n}") for n in range(5)]
    answers = submit_together(writer, items)
    assert commits.count == 1
    assert all(isinstance(a, Answer) and a.status == 202 for a in answers)
    stored = {row.id: row for row in rows(ledger, analysis_runs)}
    for answer, item in zip(answers, items, strict=True):
        assert isinstance(answer, Answer)
        assert len(answer.run_ids) == len(item.runs.plans) == len(catalog.select(None))
        assert {stored[run_id].conversation_pk for run_id in answer.run_ids} == {
            next(
                r.id
                for r in rows(ledger, conversations)
                if r.conversation_id == item.runs.conversation.conversation_id
            )
        }
    queued = sorted(r.id for r in stored.values() if r.status == "queued")
    assert sorted(sent) == queued  # published once, after the commit
    assert all(stored[run_id].enqueue_count == 1 for run_id in queued)
    assert all(stored[run_id].enqueued_at is not None for run_id in queued)
    log = rows(ledger, webhook_deliveries)
    assert sorted(row.outcome for row in log) == ["accepted"] * 5
    assert sorted(run for row in log for run in row.run_ids) == sorted(stored)


def test_two_deliveries_of_one_event_in_one_batch_record_one_set_of_runs(
    writer: GroupCommit[Delivery, Answer], catalog: Catalog, ledger: Ledger, commits: Commits
) -> None:
    first = delivery(catalog, "call-twice")
    # The same event again, but its content changed meanwhile: the event identity decides.
    again = delivery(catalog, "call-twice", text="Hello again, how can I help?")
    answers = submit_together(writer, [first, again])
    assert commits.count == 1
    assert isinstance(answers[0], Answer)
    assert isinstance(answers[1], Answer)
    assert (answers[0].status, answers[1].status) == (202, 200)
    assert answers[1].run_ids == answers[0].run_ids
    assert answers[1].to_send == []
    assert sorted(row.id for row in rows(ledger, analysis_runs)) == sorted(answers[0].run_ids)
    log = sorted(rows(ledger, webhook_deliveries), key=lambda row: row.id)
    assert [(row.outcome, row.status_code) for row in log] == [
        ("accepted", 202),
        ("duplicate", 200),
    ]
    assert log[1].run_ids == answers[0].run_ids


def test_a_later_batch_finds_the_event_claimed_by_the_unique_index(
    writer: GroupCommit[Delivery, Answer], catalog: Catalog, ledger: Ledger
) -> None:
    [first] = submit_together(writer, [delivery(catalog, "call-later")])
    [again] = submit_together(writer, [delivery(catalog, "call-later", text="changed")])
    assert isinstance(first, Answer)
    assert isinstance(again, Answer)
    assert (first.status, again.status) == (202, 200)
    assert again.run_ids == first.run_ids
    assert len(rows(ledger, analysis_runs)) == len(first.run_ids)
    # The database refuses a second accepted row of one event whatever the code does.
    with pytest.raises(sa.exc.IntegrityError), ledger.transaction() as connection:
        connection.execute(
            sa.insert(webhook_deliveries).values(
                received_at=datetime.now(UTC),
                source="rt",
                event_id="call-later:call_analyzed",
                signature="valid",
                status_code=202,
                outcome="accepted",
            )
        )


def test_the_same_content_under_a_new_event_id_is_a_duplicate_of_its_runs(
    writer: GroupCommit[Delivery, Answer], catalog: Catalog
) -> None:
    [first] = submit_together(writer, [delivery(catalog, "call-same", source="a")])
    [other] = submit_together(writer, [delivery(catalog, "call-same", source="b")])
    assert isinstance(first, Answer)
    assert isinstance(other, Answer)
    assert (first.status, other.status) == (202, 200)
    assert other.run_ids == first.run_ids


def test_a_failing_delivery_fails_alone_and_the_rest_of_its_batch_is_recorded(
    writer: GroupCommit[Delivery, Answer],
    catalog: Catalog,
    ledger: Ledger,
    commits: Commits,
    sent: Sent,
) -> None:
    # The database itself refuses this one conversation (as PostgreSQL refuses a NUL character
    # in JSON): nothing in the code is patched.
    dialect = ledger.engine.dialect.name
    with ledger.transaction() as connection:
        for statement in POISON_TRIGGER[dialect]:
            connection.exec_driver_sql(statement)
    try:
        check_a_failing_delivery_fails_alone(writer, catalog, ledger, commits, sent)
    finally:
        with ledger.transaction() as connection:
            for statement in POISON_TRIGGER_DROP[dialect]:
                connection.exec_driver_sql(statement)


POISON_TRIGGER = {
    "sqlite": [
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON conversations "
        "WHEN NEW.conversation_id = 'call-poison' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.conversation_id = 'call-poison' THEN "
        "RAISE EXCEPTION 'refused by the test' USING ERRCODE = 'check_violation'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON conversations "
        "FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    ],
}
POISON_TRIGGER_DROP = {
    "sqlite": ["DROP TRIGGER refuse_poison"],
    "postgresql": [
        "DROP TRIGGER refuse_poison ON conversations",
        "DROP FUNCTION refuse_poison()",
    ],
}


def check_a_failing_delivery_fails_alone(
    writer: GroupCommit[Delivery, Answer],
    catalog: Catalog,
    ledger: Ledger,
    commits: Commits,
    sent: Sent,
) -> None:
    items: list[Delivery] = [
        delivery(catalog, "call-good-1"),
        delivery(catalog, "call-poison"),
        delivery(catalog, "call-good-2"),
        LogOnly(
            LogEntry(datetime.now(UTC), "rt", "acme", None, None, "invalid", 401, "unauthorized")
        ),
    ]
    answers = submit_together(writer, items)
    assert isinstance(answers[1], sa.exc.IntegrityError)
    good = [answers[0], answers[2]]
    planned = len(catalog.select(None))
    assert all(
        isinstance(a, Answer) and a.status == 202 and len(a.run_ids) == planned for a in good
    )
    assert isinstance(answers[3], Answer)
    assert answers[3].status == 401
    assert commits.count == 3  # the failed batch committed nothing; then each good item alone
    stored = rows(ledger, analysis_runs)
    assert sorted(r.id for r in stored) == sorted(
        run_id for a in good if isinstance(a, Answer) for run_id in a.run_ids
    )
    assert sorted(sent) == sorted(r.id for r in stored if r.status == "queued")
    assert "call-poison" not in {r.conversation_id for r in rows(ledger, conversations)}
    log = rows(ledger, webhook_deliveries)
    assert sorted(row.outcome for row in log) == ["accepted", "accepted", "unauthorized"]


def test_a_delivery_whose_client_left_before_its_batch_is_not_written(
    writer: GroupCommit[Delivery, Answer], catalog: Catalog, ledger: Ledger, commits: Commits
) -> None:
    commits.gate.clear()  # hold the first batch before its commit
    held = writer.submit_nowait(delivery(catalog, "call-held"))
    for _ in range(200):
        if held.running():
            break
        threading.Event().wait(0.01)
    assert held.running()
    left = writer.submit_nowait(delivery(catalog, "call-left"))
    assert left.cancel()  # the client went away while it waited
    commits.gate.set()
    assert held.result(timeout=30).status == 202
    writer.close()
    ids = {row.conversation_id for row in rows(ledger, conversations)}
    assert ids == {"call-held"}


@pytest.fixture(scope="module")
def shared_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    folder = tmp_path_factory.mktemp("mix")
    with Ledger.from_url(f"sqlite:///{folder / 'ledger.sqlite3'}") as ledger:
        ledger.migrate()
        yield ledger


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["e1", "e2", "e3"]), st.sampled_from(["", "changed"])),
        min_size=1,
        max_size=8,
    )
)
def test_any_mix_of_redeliveries_in_one_batch_records_each_event_once(
    shared_ledger: Ledger, catalog: Catalog, mix: list[tuple[str, str]]
) -> None:
    ledger = shared_ledger
    tag = uuid.uuid4().hex[:8]  # this example's events are new to the shared ledger
    group: GroupCommit[Delivery, Answer] = GroupCommit(
        ledger, DeliveryWriter(ledger), max_wait_seconds=0.05
    )
    try:
        answers = submit_together(
            group, [delivery(catalog, f"{tag}-{event}", text=text) for event, text in mix]
        )
    finally:
        group.close()
    firsts: dict[str, Answer] = {}
    for (event, _), answer in zip(mix, answers, strict=True):
        assert isinstance(answer, Answer)
        if event in firsts:
            assert (answer.status, answer.run_ids) == (200, firsts[event].run_ids)
        else:
            assert answer.status == 202
            firsts[event] = answer
    with ledger.engine.connect() as connection:
        stored = connection.execute(
            sa.select(analysis_runs.c.id)
            .join(conversations, conversations.c.id == analysis_runs.c.conversation_pk)
            .where(conversations.c.conversation_id.startswith(tag))
        ).scalars()
        log = connection.execute(
            sa.select(webhook_deliveries).where(webhook_deliveries.c.event_id.startswith(tag))
        ).all()
    assert sorted(stored) == sorted(
        run_id for answer in firsts.values() for run_id in answer.run_ids
    )
    assert sum(row.outcome == "accepted" for row in log) == len(firsts)
    assert len(log) == len(mix)


def snapshot_inserts(ledger: Ledger) -> tuple[list[str], Callable[..., None]]:
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO ANALYZER_SNAPSHOTS"):
            statements.append(statement)

    sa.event.listen(ledger.engine, "before_cursor_execute", seen)
    return statements, seen


def test_snapshots_known_to_be_stored_are_not_offered_again_until_a_batch_fails(
    writer: GroupCommit[Delivery, Answer], catalog: Catalog, ledger: Ledger
) -> None:
    inserts, listener = snapshot_inserts(ledger)
    try:
        # The first batch stores the snapshots; the second meets them there (so they are
        # known committed); the third offers none.
        for batch in range(3):
            submit_together(writer, [delivery(catalog, f"known-{batch}-{n}") for n in range(2)])
        assert len(inserts) == 2
        # The database loses them (restored from an older backup, say): the next batch fails
        # on the foreign key, is written again delivery by delivery, and stores them again.
        with ledger.engine.begin() as connection:
            connection.execute(sa.delete(webhook_deliveries))
            connection.execute(sa.delete(analysis_runs))
            connection.execute(sa.delete(analyzer_snapshots))
        answers = submit_together(writer, [delivery(catalog, f"after-{n}") for n in range(2)])
    finally:
        sa.event.remove(ledger.engine, "before_cursor_execute", listener)
    assert [a.status for a in answers if isinstance(a, Answer)] == [202, 202]
    stored = {row.spec_hash for row in rows(ledger, analyzer_snapshots)}
    used = {row.spec_hash for row in rows(ledger, analysis_runs) if row.spec_hash}
    assert used
    assert used <= stored
