"""Settings from the environment, and logs that never carry secrets or transcript text."""

from __future__ import annotations

import json

import pytest
import structlog
from typer.testing import CliRunner

from worker.cli.commands import app
from worker.observability.logging import configure_logging, redact
from worker.settings import Settings, tool_secrets


def test_settings_read_the_posthoc_prefix_and_the_sdk_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POSTHOC_* sets fields; the SDK's own ANTHROPIC_API_KEY is honoured, and stays secret."""
    monkeypatch.setenv("POSTHOC_CONCURRENCY", "64")
    monkeypatch.setenv("POSTHOC_ANALYZER_DIRS", '["team/analyzers"]')
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    settings = Settings()
    assert settings.concurrency == 64
    assert [str(p) for p in settings.analyzer_dirs] == ["team/analyzers"]
    assert settings.anthropic_api_key is not None
    assert settings.anthropic_api_key.get_secret_value() == "sk-ant-test"
    assert "sk-ant-test" not in repr(settings)


def test_rate_limit_redis_defaults_to_a_redis_broker() -> None:
    """The shared rate limit lives in Redis when the broker is Redis, nowhere otherwise."""
    assert Settings(broker_url="redis://r:6379/0").rate_limit_redis_url == "redis://r:6379/0"
    assert Settings(broker_url="amqp://guest@r//").rate_limit_redis_url is None


def test_tool_secrets_come_from_their_own_prefix() -> None:
    """`POSTHOC_SECRET_CRM_TOKEN` is the HTTP tools' `{{secrets.CRM_TOKEN}}`."""
    environ = {"POSTHOC_SECRET_CRM_TOKEN": "t0k", "POSTHOC_MODEL": "x", "HOME": "/root"}
    assert tool_secrets(environ) == {"CRM_TOKEN": "t0k"}


def test_an_invalid_setting_is_a_usage_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bad environment variable stops the command with exit 2 and names the variable."""
    monkeypatch.setenv("POSTHOC_CONCURRENCY", "lots")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    assert "POSTHOC_CONCURRENCY" in result.output


def test_redaction_drops_secret_and_transcript_fields() -> None:
    """Fields named like secrets or transcript text are replaced, others are kept."""
    event = {
        "event": "x",
        "api_key": "sk-1",
        "crm_token": "t",
        "text": "customer said their card number",
        "run_id": "r1",
        "context": "kept",
    }
    cleaned = redact(None, "info", event)
    assert cleaned["api_key"] == cleaned["crm_token"] == cleaned["text"] == "[redacted]"
    assert cleaned["run_id"] == "r1"
    assert cleaned["context"] == "kept"


def test_json_logs_when_not_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal every line is JSON, with bound context merged in."""
    configure_logging("info", "json")
    try:
        with structlog.contextvars.bound_contextvars(run_id="r-9"):
            structlog.get_logger("t").info("run.finished", status="succeeded", secret="s")
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        structlog.reset_defaults()
    assert line["event"] == "run.finished"
    assert line["run_id"] == "r-9"
    assert line["secret"] == "[redacted]"
