"""Write effects through the real engine and ledger (SQLite and PostgreSQL): the example's
`ticket_upsert` step in a run that then fails transiently and is retried sends exactly one
request, and the retried result's trace shows the replayed outcome; a dry run sends nothing; a
header value the model cannot send is a tool error, and the run goes on."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog

from schemas import AnalysisResult
from tests.worker.effects_world import (
    ROOT,
    SECRETS,
    TICKET,
    CrmServer,
    ProcedureFollower,
    escalated_conversation,
    write_definitions,
)
from tests.worker.ledger.conftest import (
    BACKENDS,
    postgres_url,  # noqa: F401 - the PostgreSQL fixture
)
from worker.catalog import Catalog
from worker.engine.runner import Engine, EngineConfig, ProcessOutcome
from worker.http_transport import HttpxTransport
from worker.ledger import Ledger, ManualClock, RunPlan
from worker.ledger.effects import LedgerEffectStore

LEASE_SECONDS = 30.0


@pytest.fixture(autouse=True)
def _default_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(params=BACKENDS)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    ledger = Ledger.from_url(url, now=ManualClock())
    ledger.migrate()
    if ledger.engine.dialect.name == "postgresql":
        with ledger.engine.begin() as connection:
            connection.exec_driver_sql(
                "TRUNCATE effects, run_attempts, analysis_runs, conversations "
                "RESTART IDENTITY CASCADE"
            )
    try:
        yield ledger
    finally:
        ledger.dispose()


@pytest.fixture
def crm() -> Iterator[CrmServer]:
    with CrmServer() as server:
        yield server


def catalog_for(tmp_path: Path, crm: CrmServer, **options: Any) -> Catalog:
    analyzers_dir, procedures_dir = write_definitions(tmp_path / "defs", crm.port, **options)
    return Catalog.load([analyzers_dir], [procedures_dir], builtins=False)


def queue_run(ledger: Ledger) -> str:
    ref = ledger.save_conversation(escalated_conversation())
    plan = RunPlan("escalation_triage", "2.1.0", max_attempts=3)
    [run] = ledger.record_runs(ref.pk, [plan], trigger="webhook")
    return run.id


def process(ledger: Ledger, catalog: Catalog, model: Any, run_id: str) -> ProcessOutcome:
    async def go() -> ProcessOutcome:
        async with HttpxTransport() as transport:
            engine = Engine(
                ledger=ledger,
                catalog=catalog,
                model=model,
                http=transport,
                secrets=SECRETS,
                config=EngineConfig(
                    worker_id="host:1",
                    default_model="claude-sonnet-5-5",
                    lease_seconds=LEASE_SECONDS,
                    heartbeat_seconds=60.0,
                ),
                jitter=lambda: 0.0,
            )
            return await engine.process(run_id)

    return asyncio.run(go())


def test_a_retried_run_replays_its_write_instead_of_sending_it_again(
    ledger: Ledger, crm: CrmServer, tmp_path: Path
) -> None:
    catalog = catalog_for(tmp_path, crm)
    run_id = queue_run(ledger)
    model = ProcedureFollower(crm, fail_after_ticket=True)

    first = process(ledger, catalog, model, run_id)

    assert first.status == "retry"
    assert model.failed
    [ticket_request] = crm.tickets()
    key = ticket_request.headers["idempotency-key"]
    assert key.startswith("posthoc-")
    assert ticket_request.body == {
        "account_id": "ACC-10442",
        "priority": "high",
        "summary": "The router drops hourly. (Dana, business tier)",
    }
    [effect] = LedgerEffectStore(ledger.engine).for_run(run_id)
    assert (effect.key, effect.state, effect.status_code, effect.sends) == (key, "done", 201, 1)
    assert effect.scope.startswith("procedure:escalation_ticket:step:")

    ledger_clock = ledger._clock  # the ManualClock the fixture gave the ledger
    assert isinstance(ledger_clock, ManualClock)
    ledger_clock.advance(first.retry_in or 0.0)
    second = process(ledger, catalog, model, run_id)

    assert second == ProcessOutcome("succeeded")
    assert len(crm.tickets()) == 1, "the retry must not send the ticket again"
    [result] = ledger.results([run_id])
    assert isinstance(result, AnalysisResult)
    [upsert] = [call for call in result.trace if call.tool_name == "ticket_upsert"]
    assert upsert.effect is not None
    assert (upsert.effect.idempotency_key, upsert.effect.replayed) == (key, True)
    assert upsert.succeeded
    assert upsert.output == effect.output
    assert upsert.procedure_name == "escalation_ticket"
    assert [value.value for value in result.outputs["ticket"]] == [TICKET]
    # The read before it is made again on the retry: reads are not effects.
    lookups = [r for r in crm.received if r.path.startswith("/api/v2/accounts/")]
    assert len(lookups) == 2
    assert all("idempotency-key" not in r.headers for r in lookups)
    with ledger.engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT url, outcome FROM effects")).one()
    assert SECRETS["ACME_CRM_TOKEN"] not in str(stored)


def test_a_dry_run_describes_the_write_and_the_crm_sees_none(
    ledger: Ledger, crm: CrmServer, tmp_path: Path
) -> None:
    catalog = catalog_for(tmp_path, crm, dry_run=True)
    run_id = queue_run(ledger)

    outcome = process(ledger, catalog, ProcedureFollower(crm), run_id)

    assert outcome == ProcessOutcome("succeeded")
    assert crm.tickets() == []
    assert len(crm.received) == 1  # the account lookup: reads are still made
    [result] = ledger.results([run_id])
    [upsert] = [call for call in result.trace if call.tool_name == "ticket_upsert"]
    assert upsert.effect is not None
    assert upsert.effect.dry_run
    assert f"POST http://127.0.0.1:{crm.port}/api/v2/tickets" in upsert.output
    assert "The router drops hourly. (Dana, business tier)" in upsert.output
    assert LedgerEffectStore(ledger.engine).for_run(run_id) == []


def test_a_header_value_that_cannot_be_sent_is_a_tool_error_and_the_run_goes_on(
    ledger: Ledger, crm: CrmServer, tmp_path: Path
) -> None:
    """Issue 8, item 9: `José` in a header the model fills fails that call, not the run."""
    catalog = catalog_for(tmp_path, crm, ticket_headers={"X-Summary": "{{summary}}"})
    run_id = queue_run(ledger)
    outcome = process(ledger, catalog, _AccentedSummary(ProcedureFollower(crm)), run_id)

    assert outcome == ProcessOutcome("succeeded")
    assert crm.tickets() == []
    [result] = ledger.results([run_id])
    [upsert] = [call for call in result.trace if call.tool_name == "ticket_upsert"]
    assert not upsert.succeeded
    assert upsert.error is not None
    assert "header 'X-Summary' cannot carry 'é'" in upsert.error
    assert result.status == "succeeded"


class _AccentedSummary:
    """The follower, giving a summary with a non-ASCII letter."""

    def __init__(self, inner: ProcedureFollower) -> None:
        self.inner = inner

    async def complete(self, request: Any) -> Any:
        turn = await self.inner.complete(request)
        for block in turn.content:
            if block.get("name") == "provide_parameters":
                block["input"]["values"]["issue_summary"] = "José's router drops hourly."
        return turn

    async def count_tokens(self, request: Any) -> int:
        return 1000


def test_a_write_whose_process_was_killed_before_recording_is_resent_with_the_same_key(
    ledger: Ledger, crm: CrmServer, tmp_path: Path
) -> None:
    """The worker dies after the ticket request went out and before its outcome was recorded
    (SIGKILL while the CRM holds its answer). The effect stays pending; the run's retry sends
    the request again with the SAME idempotency key, so the CRM can deduplicate it."""
    write_definitions(tmp_path / "defs", crm.port)
    catalog = Catalog.load(
        [tmp_path / "defs" / "analyzers"], [tmp_path / "defs" / "procedures"], builtins=False
    )
    run_id = queue_run(ledger)
    crm.hold_tickets = True
    url = ledger.engine.url.render_as_string(hide_password=False)
    log = tmp_path / "child.log"
    with log.open("wb") as output:
        child = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [
                sys.executable,
                "-m",
                "tests.worker.effects_child",
                url,
                str(tmp_path / "defs"),
                run_id,
            ],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            arrived = crm.ticket_arrived.wait(60)
            assert arrived, f"no ticket request; the child said: {log.read_text()[-2000:]}"
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    assert child.returncode == -signal.SIGKILL
    crm.hold_tickets = False
    crm.release.set()
    store = LedgerEffectStore(ledger.engine)
    [effect] = store.for_run(run_id)
    assert (effect.state, effect.sends, effect.output) == ("pending", 1, None)

    # Another worker takes the run over once the dead one's lease has run out.
    clock = ledger._clock
    assert isinstance(clock, ManualClock)
    clock.set(datetime.now(UTC) + timedelta(hours=1))
    outcome = process(ledger, catalog, ProcedureFollower(crm), run_id)

    assert outcome == ProcessOutcome("succeeded")
    first, second = crm.tickets()
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == effect.key
    assert first.body == second.body
    [done] = store.for_run(run_id)
    assert (done.state, done.sends, done.status_code) == ("done", 2, 201)
    [result] = ledger.results([run_id])
    [upsert] = [call for call in result.trace if call.tool_name == "ticket_upsert"]
    assert upsert.effect is not None
    assert (upsert.effect.idempotency_key, upsert.effect.resent) == (effect.key, True)
    assert not upsert.effect.replayed
    assert [attempt.outcome for attempt in ledger.attempts(run_id)] == ["expired", "succeeded"]
