"""`posthoc rerun`, `jobs list|show|cancel` and `diff` through the CLI, and a fuzz of the
selection options: any value ends with a usage error naming the option or a count, never a
traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from worker.cli import app
from worker.ledger import Ledger

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def seeded(workdir: Path) -> str:
    """Three example conversations, each run once by follow_ups (simulated model)."""
    runner = CliRunner()
    examples = sorted((REPO / "examples" / "conversations").glob("*.json"))[:3]
    result = runner.invoke(
        app, ["run", "--simulate", "--no-deliver", "-a", "follow_ups", *map(str, examples)]
    )
    assert result.exit_code == 0, result.output
    return f"sqlite:///{workdir / 'ledger.sqlite3'}"


def test_rerun_dry_run_then_run_then_jobs_and_diff(seeded: str) -> None:
    runner = CliRunner()
    dry = runner.invoke(app, ["rerun", "-a", "follow_ups", "--dry-run", "--batch", "--json"])
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.stdout)
    assert planned["job_id"] is None
    assert planned["selected"] == 3
    assert planned["estimate_from"] == "stored_usage"
    assert planned["estimated_usd"] == planned["estimated_batch_usd"]

    done = runner.invoke(app, ["rerun", "-a", "follow_ups@1.0.0", "--simulate", "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    for key in ("job_id", "selected", "estimated_usd", "recorded", "skipped", "spent_usd"):
        assert key in summary
    assert summary["status"] == "done"
    assert summary["selected"] == summary["recorded"] + summary["skipped"] == 3
    assert summary["spent_usd"] > 0
    with Ledger.from_url(seeded) as ledger:
        assert ledger.counts_by_status()["succeeded"] == 6  # three old, three new

    listed = runner.invoke(app, ["jobs", "list", "--json"])
    assert [json.loads(line)["job_id"] for line in listed.stdout.splitlines()] == [
        summary["job_id"]
    ]
    shown = runner.invoke(app, ["jobs", "show", summary["job_id"], "--json"])
    assert json.loads(shown.stdout)["selection"] == {"analyzer": "follow_ups", "version": "1.0.0"}
    cancelled = runner.invoke(app, ["jobs", "cancel", summary["job_id"]])
    assert "done" in cancelled.stdout  # a finished job stays finished
    missing = runner.invoke(app, ["jobs", "show", "nope"])
    assert missing.exit_code == 2
    assert "no rerun job with id 'nope'" in missing.output

    compared = runner.invoke(
        app, ["diff", "-a", "follow_ups", "--from", "1.0.0", "--to", "1.0.0", "--json"]
    )
    assert compared.exit_code == 0, compared.output
    assert json.loads(compared.stdout)["compared"] == 3


def test_rerun_needs_an_analyzer_or_a_job(workdir: Path) -> None:
    result = CliRunner().invoke(app, ["rerun"])
    assert result.exit_code == 2
    assert "--analyzer" in result.output
    unknown = CliRunner().invoke(app, ["rerun", "-a", "nope", "--dry-run"])
    assert unknown.exit_code == 2
    assert "'nope' is not loaded" in unknown.output


OPTION_VALUES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
)
WHERES = st.one_of(
    OPTION_VALUES,
    st.sampled_from(
        [
            'outcome == "resolved"',
            "turns.exists(t, t.turns.exists(u, u.exists(v, v)))",
            "size(events) > 1 &&",
            'events.exists(e, e.type == "tool_call" && e.result.vendorId == "V-1")',
            "1 / 0 == 1",
            "metadata.missing.key == 1",
            "(" * 300,
        ]
    ),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    where=WHERES,
    tenant=st.none() | OPTION_VALUES,
    outcome=st.none() | OPTION_VALUES,
    since=st.none() | OPTION_VALUES | st.just("2026-11-30T00:00:00Z"),
    until=st.none() | OPTION_VALUES | st.just("2020-01-01"),
    conversation=st.lists(OPTION_VALUES, max_size=3),
)
def test_fuzzed_selection_options_never_crash(
    seeded: str,
    where: str,
    tenant: str | None,
    outcome: str | None,
    since: str | None,
    until: str | None,
    conversation: list[str],
) -> None:
    arguments = ["rerun", "-a", "follow_ups", "--dry-run", "--json", "--where", where]
    for option, value in (
        ("--tenant", tenant),
        ("--outcome", outcome),
        ("--since", since),
        ("--until", until),
    ):
        if value is not None:
            arguments += [option, value]
    for item in conversation:
        arguments += ["--conversation", item]
    result = CliRunner().invoke(app, arguments)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        assert 0 <= json.loads(result.stdout)["selected"] <= 3
    else:
        assert result.exit_code == 2
        assert "error: --" in result.output or "error: until" in result.output, result.output
