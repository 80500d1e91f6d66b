"""`posthoc procedures ...`: import (YAML and markdown, idempotent, versions), list, show,
match (the seed's vendor onboarding), approve, reject, delete, export; and a fuzz of import."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from worker.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "procedures"

LEARNED = """\
kind: procedure
name: password_reset
created_by: learned
tenant_id: acme
trigger:
  description: A customer cannot log in and wants a new password.
  patterns: ["reset * password"]
content: Verify the customer's identity, then send the reset link.
"""

MARKDOWN = """\
---
name: gentle_refunds
trigger:
  description: A customer asks for their money back.
  patterns: ["money back"]
---
# Refunds

Apologise first, then check the order.
"""


def posthoc(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def listed(*args: str) -> list[dict[str, object]]:
    result = posthoc("procedures", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_import_is_idempotent_and_a_change_is_a_new_version(
    ledger_url: str, tmp_path: Path
) -> None:
    source = tmp_path / "procs"
    shutil.copytree(EXAMPLES, source)
    first = posthoc("procedures", "import", str(source))
    assert first.exit_code == 0, first.output
    assert first.stdout.count("imported:") == 3
    again = posthoc("procedures", "import", str(source))
    assert again.exit_code == 0, again.output
    assert again.stdout.count("unchanged:") == 3
    assert "imported:" not in again.stdout
    assert len(listed()) == 3
    # A changed file is a new version; the old one stays.
    path = source / "vendor_onboarding.yaml"
    path.write_text(path.read_text().replace("Check that a vendor", "Verify that a vendor"))
    changed = posthoc("procedures", "import", str(path))
    assert "imported: vendor_onboarding v2 approved" in changed.stdout
    versions = listed("--name", "vendor_onboarding")
    assert [v["version"] for v in versions] == [2, 1]
    shown = posthoc("procedures", "show", "vendor_onboarding", "--json")
    assert json.loads(shown.stdout)["version"] == 2
    older = posthoc("procedures", "show", "vendor_onboarding", "--version", "1", "--json")
    assert json.loads(older.stdout)["version"] == 1


def test_match_finds_the_seed_vendor_onboarding_by_its_pattern(workdir: Path) -> None:
    assert posthoc("procedures", "import", str(EXAMPLES / "vendor_onboarding.yaml")).exit_code == 0
    args = ["--tenant", "globex", "--agent", "procurement-assistant"]
    found = posthoc("procedures", "match", "Onboard the new vendor TechCorp", *args)
    assert found.exit_code == 0, found.output
    assert found.stdout.startswith("vendor_onboarding v1 (proc_")
    assert "matched by pattern: trigger pattern 'onboard * vendor'" in found.stdout
    as_json = posthoc("procedures", "match", "Onboard the new vendor TechCorp", *args, "--json")
    answer = json.loads(as_json.stdout)
    assert (answer["name"], answer["path"], answer["pattern"]) == (
        "vendor_onboarding",
        "pattern",
        "onboard * vendor",
    )
    # Another tenant never sees it.
    other = posthoc("procedures", "match", "Onboard the new vendor TechCorp", "--tenant", "acme")
    assert other.exit_code == 1
    assert "no approved procedure of tenant 'acme'" in other.stderr


def test_learned_starts_pending_then_approve_and_reject_via_the_cli(
    workdir: Path, tmp_path: Path
) -> None:
    (tmp_path / "learned.yaml").write_text(LEARNED)
    imported = posthoc("procedures", "import", str(tmp_path / "learned.yaml"))
    assert "password_reset v1 pending" in imported.stdout
    [pending] = listed("--status", "pending")
    task = ["procedures", "match", "please reset my password", "--tenant", "acme"]
    assert posthoc(*task).exit_code == 1
    approved = posthoc("procedures", "approve", str(pending["id"]), "--tenant", "acme")
    assert approved.exit_code == 0, approved.output
    assert f"{pending['id']}: password_reset v1 approved" in approved.stdout
    assert posthoc(*task).exit_code == 0
    [record] = listed("--status", "approved")
    assert record["decided_by"] == "cli"
    # Another tenant cannot decide on it.
    wrong = posthoc("procedures", "reject", str(pending["id"]), "--tenant", "globex")
    assert wrong.exit_code == 1
    assert "no stored procedure" in wrong.stderr
    assert posthoc("procedures", "reject", str(pending["id"])).exit_code == 0
    assert posthoc(*task).exit_code == 1
    assert listed("--status", "rejected")[0]["id"] == pending["id"]
    # Re-importing the same file does not resurrect the rejected version.
    again = posthoc("procedures", "import", str(tmp_path / "learned.yaml"))
    assert "unchanged: password_reset v1 rejected" in again.stdout
    deleted = posthoc("procedures", "delete", str(pending["id"]))
    assert deleted.exit_code == 0
    assert listed() == []


def test_markdown_import_show_and_export_round_trip(workdir: Path, tmp_path: Path) -> None:
    (tmp_path / "refunds.md").write_text(MARKDOWN)
    result = posthoc("procedures", "import", str(tmp_path / "refunds.md"), "--tenant", "acme")
    assert result.exit_code == 0, result.output
    shown = posthoc("procedures", "show", "gentle_refunds", "--tenant", "acme")
    assert "status: approved" in shown.stdout
    assert "Apologise first, then check the order." in shown.stdout
    assert "tenant_id: acme" in shown.stdout
    exported = posthoc("procedures", "export", "--tenant", "acme")
    (tmp_path / "export.yaml").write_text(exported.stdout)
    back = posthoc("procedures", "import", str(tmp_path / "export.yaml"))
    assert back.exit_code == 0, back.output
    assert "unchanged: gentle_refunds v1 approved" in back.stdout


def test_import_reports_located_problems_and_keeps_the_valid_ones(
    workdir: Path, tmp_path: Path
) -> None:
    (tmp_path / "good.yaml").write_text(LEARNED)
    bad = LEARNED.replace("tenant_id: acme\n", "").replace("* password", "||")
    (tmp_path / "bad.yaml").write_text(bad)
    (tmp_path / "nofront.md").write_text("# just text\n")
    result = posthoc("procedures", "import", str(tmp_path), "--tenant", "globex")
    assert result.exit_code == 1
    assert "bad.yaml" in result.stderr
    assert "pattern-valid" in result.stderr
    assert "nofront.md:1: (file): " in result.stderr
    assert "markdown-front-matter" in result.stderr
    # The files say tenant acme; --tenant globex is a conflict, named, not an override.
    assert "the file says tenant_id 'acme' but --tenant is 'globex'" in result.stderr
    assert listed() == []
    result = posthoc("procedures", "import", str(tmp_path / "good.yaml"), "--agent", "bot-1")
    assert result.exit_code == 0
    assert listed()[0]["agent_id"] == "bot-1"


def test_status_option_is_checked(workdir: Path) -> None:
    result = posthoc("procedures", "list", "--status", "maybe")
    assert result.exit_code == 2
    assert "--status must be one of" in result.output


@settings(
    max_examples=20 if os.environ.get("CI") else 40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.builds(
            lambda front, body: f"---\n{front}\n---\n{body}",
            st.text(max_size=120),
            st.text(max_size=120),
        ),
        st.sampled_from([LEARNED, MARKDOWN]).map(lambda t: t[: len(t) // 2]),
    ),
    suffix=st.sampled_from([".yaml", ".md"]),
)
def test_fuzz_import_never_crashes(workdir: Path, text: str, suffix: str) -> None:
    """Any file text is imported or answered with located problems, never a traceback."""
    path = workdir / f"fuzz{suffix}"
    path.write_text(text, encoding="utf-8", errors="replace")
    result = CliRunner().invoke(app, ["procedures", "import", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 1, 2)
    if result.exit_code != 0:
        assert str(path) in result.stderr
