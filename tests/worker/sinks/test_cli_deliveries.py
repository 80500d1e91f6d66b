"""`posthoc run` delivers in-process (`--no-deliver` skips), `posthoc deliveries list|replay`,
and `posthoc status` shows deliveries by state: against the fake Slack over HTTP."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner, Result

from worker.cli import app
from worker.cli.deliveries import shown_destination
from worker.sinks.fake_slack import FakeSlack, serve_fake_slack

ROOT = Path(__file__).resolve().parents[3]
CONVERSATION = ROOT / "examples" / "conversations" / "angry_refund.json"
FOLLOW_UPS = ROOT / "analyzers" / "builtin" / "follow_ups.yaml"
TOKEN = "xoxb-cli"


@pytest.fixture
def slack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    fake = FakeSlack(token=TOKEN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POSTHOC_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    monkeypatch.setenv("POSTHOC_LOG_FORMAT", "json")
    monkeypatch.setenv("POSTHOC_BUILTIN_ANALYZERS", "false")
    monkeypatch.setenv("POSTHOC_SLACK_BOT_TOKEN", TOKEN)
    analyzers = tmp_path / "analyzers"
    analyzers.mkdir()
    text = FOLLOW_UPS.read_text(encoding="utf-8").split("sinks:")[0]
    (analyzers / "follow_ups.yaml").write_text(
        text + 'sinks:\n  - type: slack\n    channel: "#cx-digest"\n', encoding="utf-8"
    )
    monkeypatch.setenv("POSTHOC_ANALYZER_DIRS", json.dumps([str(analyzers)]))
    root_handlers = list(logging.getLogger().handlers)
    with serve_fake_slack(fake) as base_url:
        monkeypatch.setenv("POSTHOC_SLACK_API_URL", base_url)
        yield fake
    structlog.reset_defaults()
    for handler in logging.getLogger().handlers:
        if handler not in root_handlers:
            logging.getLogger().removeHandler(handler)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_run_delivers_and_replay_updates_the_same_message(slack: FakeSlack) -> None:
    ran = invoke("run", str(CONVERSATION), "--simulate")
    assert ran.exit_code == 0, ran.output
    assert "deliveries: 1 delivered" in ran.output
    [message] = slack.messages("#cx-digest")

    listed = invoke("deliveries", "list", "--json", "--status", "delivered")
    [row] = [json.loads(line) for line in listed.output.splitlines()]
    assert row["destination"] == "#cx-digest"
    assert row["sink"] == "slack"

    replayed = invoke("deliveries", "replay", row["id"], "--now")
    assert replayed.exit_code == 0, replayed.output
    assert f"{row['id']}: delivered" in replayed.output
    assert slack.messages("#cx-digest") == [message]
    assert message.edits == 1

    status = json.loads(invoke("status", "--json").output)
    assert status["deliveries"] == {"delivered": 1}


def test_no_deliver_holds_deliveries_back_until_replayed(slack: FakeSlack) -> None:
    ran = invoke("run", str(CONVERSATION), "--simulate", "--no-deliver")
    assert ran.exit_code == 0, ran.output
    assert "1 held back" in ran.output
    assert slack.messages("#cx-digest") == []
    [row] = [
        json.loads(line) for line in invoke("deliveries", "list", "--json").output.splitlines()
    ]
    assert (row["status"], row["dead_reason"]) == ("dead", "held_back:--no-deliver")
    assert invoke("deliveries", "replay", "--failed", "--now").exit_code == 0
    assert len(slack.messages("#cx-digest")) == 1


def test_replay_needs_exactly_one_choice_and_names_unknown_ids(slack: FakeSlack) -> None:
    del slack
    assert invoke("deliveries", "replay").exit_code == 2
    unknown = invoke("deliveries", "replay", "dlv_nosuch")
    assert unknown.exit_code == 1
    assert "dlv_nosuch" in unknown.output
    assert invoke("deliveries", "replay", "--since", "yesterday").exit_code == 2
    assert invoke("deliveries", "list", "--status", "lost").exit_code == 2


def test_urls_are_printed_without_their_secret_path() -> None:
    assert shown_destination("https://hooks.slack.com/services/T0/B0/s3cr3t") == (
        "https://hooks.slack.com/…"
    )
    assert shown_destination("#cx-digest") == "#cx-digest"
    assert shown_destination("out/results.jsonl") == "out/results.jsonl"
