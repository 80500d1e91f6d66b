"""The tenant API over real HTTP: API keys (hash only, revoke), tenant isolation (404 as if
absent), submitting conversations (minimal ones too), runs, retry, synchronous invocation (a
result in time, or 504 with what was recorded), health, and the checked-in OpenAPI spec."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.worker.http.conftest import Enqueued
from tests.worker.http.server import Server, serving
from worker.catalog import Catalog
from worker.cli.demo import simulated_model
from worker.engine.service import WorkerService
from worker.http import store
from worker.http.app import Intake
from worker.http.openapi import openapi_document
from worker.ledger import Ledger
from worker.ledger.tables import api_keys
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
MINIMAL = {
    "conversation_id": "row-17",
    "outcome": "EarlyDisconnect",
    "turns": [
        {"role": "agent", "text": "Hello, how can I help?"},
        {"role": "user", "text": "I need to change my delivery address."},
        {"role": "agent", "text": "Done, it is updated."},
    ],
}


def key_for(ledger: Ledger, tenant: str) -> dict[str, str]:
    _, key = store.create_api_key(ledger, tenant, datetime.now(UTC))
    return {"Authorization": f"Bearer {key}"}


def test_only_the_hash_of_a_key_is_stored_and_revoked_keys_are_refused(
    server: Server, ledger: Ledger
) -> None:
    record, key = store.create_api_key(ledger, "acme", datetime.now(UTC), "ci")
    with ledger.engine.connect() as connection:
        stored = json.dumps(
            [dict(r) for r in connection.execute(sa.select(api_keys)).mappings()], default=str
        )
    assert key not in stored
    assert store.hash_key(key) in stored
    auth = {"Authorization": f"Bearer {key}"}
    assert server.request("GET", "/v1/runs/nope", headers=auth).status == 404
    assert store.revoke_api_key(ledger, record.id, datetime.now(UTC))
    answer = server.request("GET", "/v1/runs/nope", headers=auth)
    assert answer.status == 401
    assert "revoked" in answer.body["error"]
    assert server.request("GET", "/v1/runs/nope").status == 401


def test_minimal_conversation_is_accepted_and_read_back_with_its_runs(
    server: Server, ledger: Ledger, enqueued: Enqueued
) -> None:
    auth = key_for(ledger, "acme")
    answer = server.request("POST", "/v1/conversations", MINIMAL, auth)
    assert answer.status == 202, answer.body
    run_ids = answer.body["run_ids"]
    assert run_ids
    assert set(enqueued) <= set(run_ids)
    read = server.request("GET", "/v1/conversations/row-17", headers=auth)
    assert read.status == 200
    assert read.body["conversation"]["tenant_id"] == "acme"
    assert read.body["conversation"]["outcome"] == "EarlyDisconnect"
    assert read.body["conversation"]["started_at"] is None
    assert sorted(r["run_id"] for r in read.body["runs"]) == sorted(run_ids)
    run = server.request("GET", f"/v1/runs/{run_ids[0]}", headers=auth)
    assert run.status == 200
    assert run.body["conversation_id"] == "row-17"
    assert run.body["trigger"] == "api"


def test_a_key_never_sees_another_tenants_data(server: Server, ledger: Ledger) -> None:
    alpha, beta = key_for(ledger, "alpha"), key_for(ledger, "beta")
    created = server.request("POST", "/v1/conversations", MINIMAL, alpha)
    run_id = created.body["run_ids"][0]
    assert server.request("GET", f"/v1/runs/{run_id}", headers=beta).status == 404
    assert server.request("GET", "/v1/conversations/row-17", headers=beta).status == 404
    assert server.request("POST", f"/v1/runs/{run_id}/retry", headers=beta).status == 404
    missing = server.request("GET", "/v1/runs/does-not-exist", headers=beta)
    assert missing.status == 404
    assert server.request("GET", f"/v1/runs/{run_id}", headers=beta).body == missing.body
    # The same conversation id under another tenant is another conversation.
    assert server.request("POST", "/v1/conversations", MINIMAL, beta).status == 202
    beta_view = server.request("GET", "/v1/conversations/row-17", headers=beta).body
    assert run_id not in [r["run_id"] for r in beta_view["runs"]]


def test_naming_another_tenant_in_the_body_is_422(server: Server, ledger: Ledger) -> None:
    answer = server.request(
        "POST", "/v1/conversations", {**MINIMAL, "tenant_id": "beta"}, key_for(ledger, "alpha")
    )
    assert answer.status == 422
    assert answer.body["error"].startswith("tenant_id: ")


def test_batch_errors_are_located_by_index(server: Server, ledger: Ledger) -> None:
    batch = [MINIMAL, {"conversation_id": "x", "turns": [{"role": "robot", "text": "hi"}]}]
    answer = server.request("POST", "/v1/conversations", batch, key_for(ledger, "acme"))
    assert answer.status == 422
    assert answer.body["errors"][0]["field"] == "1.turns.0.role"


def test_retry_only_a_failed_run(server: Server, ledger: Ledger, enqueued: Enqueued) -> None:
    auth = key_for(ledger, "acme")
    assert server.request("POST", "/v1/conversations", MINIMAL, auth).status == 202
    run_id = enqueued[0]  # a queued run
    answer = server.request("POST", f"/v1/runs/{run_id}/retry", headers=auth)
    assert answer.status == 409
    assert answer.body["error"].startswith("run_id: cannot be retried")
    claimed = ledger.claim(run_id, "w", 60)
    assert claimed is not None
    ledger.fail(run_id, "w", error_type="boom", message="failed on purpose")
    before = len(enqueued)
    answer = server.request("POST", f"/v1/runs/{run_id}/retry", headers=auth)
    assert answer.status == 202
    assert answer.body == {"run_ids": [run_id]}
    assert enqueued[before:] == [run_id]
    assert ledger.get_run(run_id).status == "queued"


def test_invoke_times_out_with_504_and_what_was_recorded(server: Server, ledger: Ledger) -> None:
    answer = server.request(
        "POST",
        "/v1/analyzers/next_steps/invoke?timeout_seconds=0.3",
        MINIMAL,
        key_for(ledger, "acme"),
    )
    assert answer.status == 504
    assert answer.body["status"] == "queued"
    assert answer.body["trigger"] == "invoke"
    assert answer.body["result"] is None
    assert ledger.get_run(answer.body["run_id"]).trigger == "invoke"


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/v1/analyzers/no_such/invoke", 404, "name: no analyzer"),
        ("/v1/analyzers/next_steps/invoke?timeout_seconds=abc", 422, "timeout_seconds:"),
        ("/v1/analyzers/next_steps/invoke?timeout_seconds=0", 422, "timeout_seconds:"),
    ],
)
def test_invoke_refuses_bad_requests(
    server: Server, ledger: Ledger, path: str, status: int, fragment: str
) -> None:
    answer = server.request("POST", path, MINIMAL, key_for(ledger, "acme"))
    assert answer.status == status
    assert answer.body["error"].startswith(fragment)


@pytest.fixture
def working_server(tmp_path: Path, catalog: Catalog) -> Iterator[tuple[Server, Ledger]]:
    """The app with a worker in the same process running the simulated model: a run id sent
    to the 'queue' is processed on a thread, as a worker would."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}",
    )
    ledger = Ledger.from_url(settings.database_url)
    ledger.migrate()
    with simulated_model() as model:
        service = WorkerService(settings, model=model, catalog=catalog)

        def enqueue(run_ids: Sequence[str]) -> None:
            for run_id in run_ids:
                threading.Thread(target=service.process, args=(run_id,), daemon=True).start()

        intake = Intake(ledger=ledger, catalog=catalog, enqueue=enqueue)
        try:
            with serving(intake) as running:
                yield running, ledger
        finally:
            service.close()
            ledger.dispose()


def test_minimal_conversation_runs_end_to_end_through_invoke(
    working_server: tuple[Server, Ledger],
) -> None:
    server, ledger = working_server
    answer = server.request(
        "POST",
        "/v1/analyzers/next_steps/invoke?timeout_seconds=60",
        MINIMAL,
        key_for(ledger, "acme"),
    )
    assert answer.status == 200, answer.body
    assert answer.body["status"] == "succeeded"
    result: dict[str, Any] = answer.body["result"]
    assert result["conversation_id"] == "row-17"
    assert result["outputs"]
    assert ledger.get_run(answer.body["run_id"]).status == "succeeded"


def test_health_and_readiness(server: Server, intake: Intake) -> None:
    assert server.request("GET", "/healthz").body == {"status": "ok"}
    ready = server.request("GET", "/readyz")
    assert (ready.status, ready.body["database"], ready.body["broker"]) == (200, True, True)
    intake.broker_ready = lambda: False
    assert server.request("GET", "/readyz").status == 503


def test_the_checked_in_spec_is_the_served_one(server: Server) -> None:
    served = server.request("GET", "/openapi.json").body
    checked_in = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert served == checked_in == json.loads(json.dumps(openapi_document()))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"outcome": "\x00"}, "outcome"),
        ({"started_at": "2026-11-20T10:00:00Z", "ended_at": "2026-11-20T09:00:00Z"}, "ended_at"),
    ],
)
def test_contract_rule_violations_name_their_field(
    server: Server, ledger: Ledger, change: dict[str, str], field: str
) -> None:
    """Rules the contract checks across fields (reported at the model's root by pydantic) are
    answered with the field they concern, found by the fuzz."""
    answer = server.request(
        "POST", "/v1/conversations", {**MINIMAL, **change}, key_for(ledger, "acme")
    )
    assert answer.status == 422
    assert answer.body["errors"][0]["field"] == field
    assert answer.body["error"].startswith(f"{field}: ")
