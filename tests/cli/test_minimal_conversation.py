"""The relaxed conversation contract from the command line: `posthoc schema conversation` says
what is needed, and a conversation with only `conversation_id` and `turns` runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

from tests.worker.test_cli_commands import invoke, read_results, workdir

__all__ = ["workdir"]  # the fixture, used by name below


def test_schema_says_only_the_id_is_required_and_explains_the_defaults(workdir: Path) -> None:
    result = invoke("schema", "conversation")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["required"] == ["conversation_id"]
    description = " ".join(document["description"].split())
    assert "Only `conversation_id` and `turns` are needed" in description
    assert "stay empty without them (never invented)" in description
    assert "triggers match it ignoring case, spaces, dashes and underscores" in description


def test_conversation_with_only_id_and_turns_runs_end_to_end(workdir: Path) -> None:
    source = workdir / "minimal.json"
    source.write_text(
        json.dumps(
            {
                "conversation_id": "dataset-row-17",
                "outcome": "EarlyDisconnect",
                "turns": [
                    {"role": "agent", "text": "Hello, how can I help?"},
                    {"role": "user", "text": "I need to change my delivery address."},
                    {"role": "agent", "text": "Done, it is updated."},
                ],
            }
        ),
        encoding="utf-8",
    )
    out = workdir / "out.jsonl"

    result = invoke("run", str(source), "--simulate", "--out", str(out))

    assert result.exit_code == 0, result.output
    results = read_results(out)
    assert results, "every built-in analyzer records a run"
    assert {r.conversation_id for r in results} == {"dataset-row-17"}
    assert any(r.status == "succeeded" for r in results)
    assert all(r.status in {"succeeded", "skipped"} for r in results)
