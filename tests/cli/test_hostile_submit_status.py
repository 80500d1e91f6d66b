"""`posthoc submit` with unstorable text, a ledger that refuses a record mid-batch, and
`posthoc status` with no ledger: clear problems, no traceback, no transcript in the output,
and every run that was recorded is queued."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

import worker.engine.celery_app
import worker.intake
from worker.cli.commands import app
from worker.ledger import Ledger

SECRET = "my card number is 4111"

# kombu's SQL transport (the embedded broker) declares its models with `noload`, which
# SQLAlchemy 2.1 deprecates; that is kombu's to fix, and harmless here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def conversation_line(conversation_id: str, text: str = "My order never arrived.") -> str:
    return json.dumps(
        {
            "conversation_id": conversation_id,
            "tenant_id": "acme",
            "agent_id": "support-bot",
            "channel": "chat",
            "started_at": "2026-11-20T09:00:00Z",
            "ended_at": "2026-11-20T09:05:00Z",
            "outcome": "resolved",
            "turns": [{"role": "user", "text": text}, {"role": "agent", "text": "Sorry."}],
        }
    )


def stored_conversation_ids(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT conversation_id FROM conversations")
            return {row[0] for row in rows}
    finally:
        engine.dispose()


def test_submit_refuses_nul_by_field_and_records_the_rest(
    ledger_url: str, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today on PostgreSQL: a DataError traceback printing the transcript. Now: a problem
    naming the field, and the valid conversation beside it recorded and queued."""
    sent: list[str] = []
    monkeypatch.setattr(
        worker.engine.celery_app, "enqueue_with", lambda _app, _ledger=None: sent.extend
    )
    batch = workdir / "batch.jsonl"
    batch.write_text(
        conversation_line("bad", SECRET + "\x00") + "\n" + conversation_line("good") + "\n",
        encoding="utf-8",
    )

    result = invoke("submit", str(batch), "--analyzer", "follow_ups")

    assert result.exit_code == 1
    assert "batch.jsonl:1: turns[0].text: contains a NUL character" in result.stderr
    assert SECRET not in result.output
    assert stored_conversation_ids(ledger_url) == {"good"}
    assert len(sent) == 1


def test_runs_recorded_before_a_refused_conversation_are_still_queued(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger refusing the second conversation (its error quoting the row) neither hides
    the first conversation's run nor prints the row."""
    sent: list[str] = []
    monkeypatch.setattr(
        worker.engine.celery_app, "enqueue_with", lambda _app, _ledger=None: sent.extend
    )
    real_record = worker.intake.record

    def refuse_second(ledger: Any, catalog: Any, conversations: Any, **kwargs: Any) -> Any:
        if conversations[0].conversation_id == "second":
            raise sa.exc.DataError("INSERT ...", {}, Exception(f"row contains {SECRET}"))
        return real_record(ledger, catalog, conversations, **kwargs)

    monkeypatch.setattr(worker.intake, "record", refuse_second)
    batch = workdir / "batch.jsonl"
    batch.write_text(
        "\n".join(conversation_line(name) for name in ("first", "second", "third")) + "\n",
        encoding="utf-8",
    )

    result = invoke("submit", str(batch), "--analyzer", "follow_ups")

    assert result.exit_code == 1
    assert "conversation 'second': the ledger refused it (Exception)" in result.stderr
    assert SECRET not in result.output
    assert len(sent) == 2
    printed = [line.split("\t") for line in result.stdout.splitlines()]
    assert sorted(row[0] for row in printed) == sorted(sent)
    assert [row[2] for row in printed] == ["first", "third"]


def test_status_without_a_ledger_refuses_and_names_what_it_looked_for(workdir: Path) -> None:
    result = invoke("status")

    assert result.exit_code == 2
    assert "no ledger found" in result.stderr
    assert "ledger.sqlite3" in result.stderr
    assert not (workdir / "ledger.sqlite3").exists()


@pytest.mark.integration
@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_status_on_an_empty_postgres_database_refuses_and_creates_nothing(
    ledger_url: str,
) -> None:
    result = invoke("status")

    assert result.exit_code == 2
    assert "has no posthoc tables" in result.stderr
    assert "password" not in result.stderr
    engine = sa.create_engine(ledger_url)
    try:
        with engine.connect() as connection:
            assert sa.inspect(connection).get_table_names() == []
    finally:
        engine.dispose()


def test_status_still_reports_an_existing_ledger(workdir: Path) -> None:
    with Ledger.from_url(f"sqlite:///{workdir / 'ledger.sqlite3'}") as ledger:
        ledger.migrate()

    result = invoke("status", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"]["queued"] == 0
