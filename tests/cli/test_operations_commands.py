"""`posthoc migrate` and `posthoc broker-config`: a migration job's command and the broker files
generated from the settings; any argument is an answer or a usage error, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from worker.cli import app
from worker.engine.broker_topology import GENERATED_FILES
from worker.ledger import Ledger

runner = CliRunner()


def test_migrate_brings_a_new_ledger_to_the_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'ledger.sqlite3'}"
    monkeypatch.setenv("POSTHOC_DATABASE_URL", url)
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    ledger = Ledger.from_url(url)
    try:
        revision = ledger.schema_revision()
    finally:
        ledger.dispose()
    assert revision is not None
    assert result.output.strip() == f"ledger at revision {revision}"
    assert runner.invoke(app, ["migrate"]).exit_code == 0  # again: a no-op


def test_broker_config_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTHOC_BROKER_URL", "amqp://x//")
    monkeypatch.setenv("POSTHOC_VISIBILITY_TIMEOUT_SECONDS", "7200")
    monkeypatch.setenv("POSTHOC_QUEUE", "fleet-a")
    conf = runner.invoke(app, ["broker-config", "rabbitmq.conf"])
    assert conf.exit_code == 0
    assert "consumer_timeout = 7500000\n" in conf.output
    definitions = json.loads(runner.invoke(app, ["broker-config", "definitions.json"]).output)
    assert definitions["exchanges"][0]["name"] == "fleet-a.dead-letter"
    assert definitions["policies"][0]["pattern"] == r"^(fleet\-a|fleet\-a\.takeover)$"
    redis = json.loads(runner.invoke(app, ["broker-config", "redis.json"]).output)
    assert redis == {"visibility_timeout": 7200}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.sampled_from(GENERATED_FILES), st.text(max_size=200)))
def test_any_argument_is_an_answer_or_a_usage_error(what: str) -> None:
    result = runner.invoke(app, ["broker-config", "--", what])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    if what in GENERATED_FILES:
        assert result.exit_code == 0
    else:
        assert result.exit_code == 2
        assert "what: one of" in result.output
