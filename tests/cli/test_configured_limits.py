"""The configured CEL limits reach every place an expression is compiled, not only `validate`:
the catalog a command loads, and the triggers evaluated on live conversations."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from analyzers.definitions.limits import DEFAULT_LIMITS, active_limits
from worker.cli.commands import app

NESTED_TRIGGER = """\
kind: analyzer
name: nested_trigger
version: "1"
description: A trigger with two nested macros.
trigger:
  expression: turns.exists(a, turns.exists(b, a.role != b.role))
instructions: Record a note.
tools: [get_turns]
outputs:
  - name: note
    description: A note.
    schema: {type: string}
"""

CONVERSATION = """\
{"conversation_id": "c-1", "turns": [
  {"role": "user", "text": "hello"}, {"role": "agent", "text": "hi"},
  {"role": "user", "text": "bye"}, {"role": "agent", "text": "bye"}]}
"""


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "analyzers").mkdir()
    (tmp_path / "analyzers" / "nested.yaml").write_text(NESTED_TRIGGER)
    (tmp_path / "c.json").write_text(CONVERSATION)
    monkeypatch.setenv("POSTHOC_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("POSTHOC_ANALYZER_DIRS", f'["{tmp_path / "analyzers"}"]')
    return tmp_path


def test_the_configured_nesting_limit_refuses_what_the_default_accepts(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["validate", "analyzers"]).exit_code == 0

    monkeypatch.setenv("POSTHOC_MAX_EXPRESSION_NESTING", "1")
    refused = runner.invoke(app, ["validate", "analyzers"])
    assert refused.exit_code == 1
    assert "nests 2 comprehension macros" in refused.output
    assert "at most 1 are allowed" in refused.output


def test_the_configured_budget_applies_to_triggers_on_live_conversations(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two nested macros over 4 turns is about 2 * 4**2 = 32 steps: within the default budget,
    over a budget of 10. Over it, the run is skipped with the rule named, not evaluated."""
    monkeypatch.setenv("POSTHOC_EXPRESSION_BUDGET", "10")
    result = CliRunner().invoke(
        app, ["run", "c.json", "-a", "nested_trigger", "--simulate", "--out", "out.jsonl"]
    )
    assert active_limits().expression_budget == 10
    assert result.exit_code == 0, result.output
    line = (files / "out.jsonl").read_text()
    assert '"status":"skipped"' in line.replace(" ", "")
    assert "over the evaluation budget of 10" in line


def test_limits_are_reset_between_tests() -> None:
    """The autouse fixture in tests/conftest.py puts the defaults back after each test."""
    assert active_limits() == DEFAULT_LIMITS


def test_a_malformed_setting_is_a_usage_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POSTHOC_ANALYZER_DIRS", "not json")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    assert "analyzer_dirs" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
