"""The `posthoc` commands that run, queue and operate analyses: exit codes, what they print and
what they write. Every test runs in its own folder with the ledger and the embedded broker in
`tmp_path`, so nothing is written in the repository."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
from typer.testing import CliRunner, Result

from schemas import AnalysisResult
from tests.worker.ledger.conftest import make_conversation, make_result
from worker.catalog import BUILTIN_DIR
from worker.cli.commands import app
from worker.ledger import Ledger, RunPlan

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "conversations"
BAD_CONVERSATION = ROOT / "tests" / "fixtures" / "invalid" / "bad_conversation.json"
BUILTINS = ["follow_ups", "next_steps", "procedure_adherence", "procedure_capture", "quality"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working folder with the ledger and broker inside it and no model configured."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POSTHOC_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    monkeypatch.setenv("POSTHOC_BROKER_URL", f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}")
    monkeypatch.setenv("POSTHOC_LOG_FORMAT", "json")
    root_handlers = list(logging.getLogger().handlers)
    yield tmp_path
    # The commands configure structlog and logging for the process: undo that for other tests.
    structlog.reset_defaults()
    for handler in logging.getLogger().handlers:
        if handler not in root_handlers:
            logging.getLogger().removeHandler(handler)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def read_results(path: Path) -> list[AnalysisResult]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [AnalysisResult.model_validate_json(line) for line in lines]


def example_conversation_count() -> int:
    files = [p for p in EXAMPLES.iterdir() if p.suffix in (".json", ".jsonl")]
    return sum(
        len(p.read_text(encoding="utf-8").splitlines()) if p.suffix == ".jsonl" else 1
        for p in files
    )


def test_run_simulated_writes_one_result_line_per_run(workdir: Path) -> None:
    out = workdir / "results" / "out.jsonl"

    result = invoke("run", str(EXAMPLES), "--simulate", "--out", str(out))

    assert result.exit_code == 0, result.output
    results = read_results(out)
    conversations = example_conversation_count()
    assert len(results) == conversations * len(BUILTINS)
    assert len({r.run_id for r in results}) == len(results)
    assert {r.analyzer for r in results} == set(BUILTINS)
    assert {r.status for r in results} <= {"succeeded", "skipped"}
    assert sum(r.status == "succeeded" for r in results) > conversations
    assert (workdir / "ledger.sqlite3").is_file()


def test_run_without_a_key_or_simulate_is_a_usage_error_naming_the_key(workdir: Path) -> None:
    result = invoke("run", str(EXAMPLES / "voicemail.json"))

    assert result.exit_code == 2
    assert "ANTHROPIC_API_KEY" in result.stderr
    assert "--simulate" in result.stderr


def test_an_invalid_input_file_exits_1_and_the_valid_ones_still_run(workdir: Path) -> None:
    inputs = workdir / "inputs"
    inputs.mkdir()
    shutil.copy(EXAMPLES / "resolved_billing_question.json", inputs)
    shutil.copy(BAD_CONVERSATION, inputs)
    out = workdir / "out.jsonl"

    result = invoke("run", str(inputs), "--simulate", "--out", str(out))

    assert result.exit_code == 1, result.output
    assert "bad_conversation.json" in result.stderr
    results = read_results(out)
    assert sorted(r.analyzer for r in results) == BUILTINS
    assert {r.status for r in results} == {"succeeded"}


def test_an_unknown_analyzer_is_a_usage_error_listing_the_known_ones(workdir: Path) -> None:
    result = invoke("run", str(EXAMPLES / "voicemail.json"), "--simulate", "--analyzer", "nosuch")

    assert result.exit_code == 2
    assert "'nosuch'" in result.stderr
    for name in BUILTINS:
        assert name in result.stderr
    assert "Traceback" not in result.output


def test_run_selects_analyzer_versions_by_name_at_version(workdir: Path) -> None:
    """Two versions of quality loaded side by side: `-a quality@1.0.0` and the bare name (the
    newest) both run, each result saying which version and snapshot produced it."""
    more = workdir / "more"
    more.mkdir()
    quality = (BUILTIN_DIR / "quality.yaml").read_text(encoding="utf-8")
    (more / "quality.yaml").write_text(
        quality.replace('version: "1.0.0"', 'version: "1.10.0"'), encoding="utf-8"
    )
    out = workdir / "out.jsonl"
    result = invoke(
        "run",
        str(EXAMPLES / "escalated_outage.json"),
        "--simulate",
        "--analyzers-dir",
        str(more),
        "-a",
        "quality@1.0.0",
        "-a",
        "quality",
        "--out",
        str(out),
    )

    assert result.exit_code == 0, result.output
    results = read_results(out)
    assert sorted(r.analyzer_version for r in results) == ["1.0.0", "1.10.0"]
    hashes = {r.provenance.spec_hash for r in results if r.provenance is not None}
    assert len(hashes) == 2
    assert None not in hashes


def test_submit_with_an_unknown_analyzer_records_nothing(workdir: Path) -> None:
    result = invoke("submit", str(EXAMPLES / "voicemail.json"), "--analyzer", "nosuch")

    assert result.exit_code == 2
    # The standalone daily_digest is loaded too (it only runs when scheduled).
    assert f"known: {sorted([*BUILTINS, 'daily_digest'])}" in result.stderr
    assert not (workdir / "broker.sqlite3").exists()


def test_demo_runs_the_examples_and_says_the_model_is_simulated(workdir: Path) -> None:
    result = invoke("demo")

    assert result.exit_code == 0, result.output
    assert "SIMULATED" in result.output
    assert "Reminder: the model above was SIMULATED." in result.output
    results = read_results(workdir / "posthoc-data" / "demo-results.jsonl")
    assert results
    assert all(r.status in ("succeeded", "skipped") for r in results)


def failed_and_succeeded_runs(workdir: Path) -> tuple[str, str]:
    """A ledger holding one dead-lettered run and one succeeded run."""
    with Ledger.from_url(f"sqlite:///{workdir / 'ledger.sqlite3'}") as ledger:
        ledger.migrate()
        ref = ledger.save_conversation(make_conversation())
        failed, succeeded = ledger.record_runs(
            ref.pk,
            [RunPlan("refund_review", "1", max_attempts=2), RunPlan("quality", "1")],
            trigger="cli",
        )
        assert ledger.claim(failed.id, "w:1", 60) is not None
        assert ledger.fail(failed.id, "w:1", error_type="internal_error", message="KeyError: 'x'")
        assert ledger.claim(succeeded.id, "w:2", 60) is not None
        done = make_result(succeeded.id, analyzer="quality")
        assert ledger.complete(succeeded.id, "w:2", done)
        return failed.id, succeeded.id


def test_status_json_counts_runs_and_lists_recent_failures(workdir: Path) -> None:
    failed_id, _ = failed_and_succeeded_runs(workdir)

    result = invoke("status", "--json")

    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["total"] == {
        "queued": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 1,
        "skipped": 0,
    }
    assert status["by_analyzer"]["refund_review"]["failed"] == 1
    assert status["by_analyzer"]["quality"]["succeeded"] == 1
    assert status["recent_failures"] == [
        {
            "run_id": failed_id,
            "analyzer": "refund_review",
            "error_type": "internal_error",
            "error_message": "KeyError: 'x'",
        }
    ]


@pytest.mark.parametrize("args", [[], ["some-run-id", "--failed"]])
def test_retry_needs_run_ids_or_failed_but_not_both(workdir: Path, args: list[str]) -> None:
    result = invoke("retry", *args)

    assert result.exit_code == 2
    assert "give run ids or --failed, not both and not neither" in result.stderr


def test_retry_a_run_that_is_not_failed_is_a_usage_error(workdir: Path) -> None:
    _, succeeded_id = failed_and_succeeded_runs(workdir)

    result = invoke("retry", succeeded_id)

    assert result.exit_code == 2
    assert succeeded_id in result.stderr


# kombu's SQL transport (the embedded broker) declares its models with `noload`, which
# SQLAlchemy 2.1 deprecates; that is kombu's to fix, and harmless here.
@pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)
def test_retry_failed_queues_dead_lettered_runs_again(workdir: Path) -> None:
    failed_id, succeeded_id = failed_and_succeeded_runs(workdir)

    result = invoke("retry", "--failed")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{failed_id}\tqueued"]
    assert "1 run(s) queued again" in result.stderr
    with Ledger.from_url(f"sqlite:///{workdir / 'ledger.sqlite3'}") as ledger:
        run = ledger.get_run(failed_id)
        assert (run.status, run.error_type, run.lease_owner) == ("queued", None, None)
        assert run.max_attempts == run.attempts + 2  # a fresh budget of attempts
        assert ledger.get_run(succeeded_id).status == "succeeded"
        assert ledger.claim(failed_id, "w:3", 60) is not None  # claimable again
    broker = sa.create_engine(f"sqlite:///{workdir / 'broker.sqlite3'}")
    try:
        with broker.connect() as connection:
            payloads = connection.exec_driver_sql("SELECT payload FROM kombu_message").scalars()
            bodies = [json.loads(payload) for payload in payloads]
    finally:
        broker.dispose()
    assert [body["headers"]["task"] for body in bodies] == ["posthoc.run_analysis"]
    assert failed_id in bodies[0]["headers"]["argsrepr"]
