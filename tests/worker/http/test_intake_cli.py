"""`posthoc api-keys create|list|revoke` and `posthoc intake log`, and what happens when the
broker is down at the moment a delivery is answered."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.worker.http.payloads import body_of, retell_headers, retell_payload
from tests.worker.http.server import Server, serving
from tests.worker.test_cli_commands import invoke, workdir
from worker.catalog import Catalog
from worker.http import store
from worker.http.app import Intake
from worker.http.sources import parse_sources
from worker.ledger import Ledger

__all__ = ["workdir"]


def test_api_keys_create_list_revoke(workdir: Path) -> None:
    created = invoke("api-keys", "create", "--tenant", "acme", "--label", "ci")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("phk_")
    listing = invoke("api-keys", "list")
    assert listing.exit_code == 0
    [line] = listing.stdout.strip().splitlines()
    key_id, tenant, _, revoked, label = line.split("\t")
    assert (tenant, revoked, label) == ("acme", "-", "ci")
    assert key not in listing.stdout
    ledger = Ledger.from_url(f"sqlite:///{workdir / 'ledger.sqlite3'}")
    try:
        assert store.tenant_of_key(ledger, key) == "acme"
        assert invoke("api-keys", "revoke", key_id).exit_code == 0
        assert store.tenant_of_key(ledger, key) is None
    finally:
        ledger.dispose()
    again = invoke("api-keys", "revoke", key_id)
    assert again.exit_code == 1
    assert "no live key" in again.stderr


def test_intake_log_filters_by_source_and_status(workdir: Path) -> None:
    ledger = Ledger.from_url(f"sqlite:///{workdir / 'ledger.sqlite3'}")
    ledger.migrate()
    sources = {"rt": {"platform": "retell", "tenant": "acme", "secrets": ["key_new"]}}
    intake = Intake(
        ledger=ledger,
        catalog=Catalog.load(),
        enqueue=lambda ids: None,
        sources=parse_sources(json.dumps(sources)),
    )
    body = body_of(retell_payload())
    now_headers = retell_headers(body, "key_new", at=time.time())
    with serving(intake) as server:
        assert post(server, body, now_headers) == 202
        assert post(server, body, retell_headers(body, "wrong", at=time.time())) == 401
    ledger.dispose()
    everything = invoke("intake", "log", "--json")
    rows = [json.loads(line) for line in everything.stdout.strip().splitlines()]
    assert [r["status_code"] for r in rows] == [401, 202]
    refused = invoke("intake", "log", "--source", "rt", "--status", "401")
    [line] = refused.stdout.strip().splitlines()
    assert "\trt\t" in line
    assert "signature=invalid" in line
    assert invoke("intake", "log", "--source", "other").stdout.strip() == ""


def post(server: Server, body: bytes, headers: dict[str, str]) -> int:
    return server.request("POST", "/v1/webhooks/rt", body, headers).status


def test_broker_down_when_answering_still_202_and_the_runs_wait_queued(
    tmp_path: Path,
) -> None:
    """The ledger commit is the promise: with the broker refusing, the answer is still 202 and
    the runs are queued in the ledger, where the sweeper's `due_queued` finds them."""
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    ledger.migrate()

    def broker_down(ids: object) -> None:
        raise ConnectionRefusedError("broker unreachable")

    sources = {"rt": {"platform": "retell", "tenant": "acme", "secrets": ["key_new"]}}
    intake = Intake(
        ledger=ledger,
        catalog=Catalog.load(),
        enqueue=broker_down,
        sources=parse_sources(json.dumps(sources)),
    )
    body = body_of(retell_payload())
    with serving(intake) as server:
        answer = server.request(
            "POST", "/v1/webhooks/rt", body, retell_headers(body, "key_new", at=time.time())
        )
    assert answer.status == 202
    queued = [ledger.get_run(run_id) for run_id in answer.body["run_ids"]]
    waiting = {run.id for run in queued if run.status == "queued"}
    assert waiting
    assert waiting <= set(ledger.due_queued(older_than_seconds=0, limit=100))
    ledger.dispose()


@pytest.mark.parametrize("config", ["{", '{"a b": {}}', '{"s": {"platform": "x"}}', "/nope.yaml"])
def test_bad_source_configuration_is_a_usage_error_without_secrets(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, config: str
) -> None:
    monkeypatch.setenv("POSTHOC_WEBHOOK_SOURCES", config)
    result = invoke("serve", "--port", "1")
    assert result.exit_code == 2
    assert "POSTHOC_WEBHOOK_SOURCES" in result.stderr


def test_sources_from_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(
        "support-line:\n  platform: elevenlabs\n  tenant: acme\n"
        "  secrets: [wsec_a, wsec_b]\n  events: [post_call_transcription]\n",
        encoding="utf-8",
    )
    sources = parse_sources(str(path))
    source = sources["support-line"]
    assert (source.platform, source.tenant, source.events) == (
        "elevenlabs",
        "acme",
        ["post_call_transcription"],
    )
    assert source.secret_values() == ["wsec_a", "wsec_b"]
    assert "wsec_a" not in repr(source)
