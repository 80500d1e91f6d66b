"""The full first request of each built-in on one example conversation, as reviewed files.

A change to the prompt (preamble, brief, tool definitions, output schemas, cache breakpoints,
model settings) changes these files, so it shows up as a diff to review. After an intended change
regenerate them and review the diff:

    POSTHOC_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/analyzers/test_request_snapshots.py

The files are plain text (each text block as written, each tool as sorted JSON) so a diff reads
like the prompt itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from analyzers.model.protocol import ModelRequest
from analyzers.runtime.session import RunOptions
from analyzers.testing import ScriptedModel, reply, text
from tests.analyzers.helpers import (
    builtin_analyzer,
    example_conversation,
    example_definitions,
    run,
)

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("POSTHOC_UPDATE_SNAPSHOTS") == "1"
BUILTINS = ("next_steps", "follow_ups", "quality")
CONVERSATION = "escalated_outage"


def rendered(request: ModelRequest) -> str:
    """The request as a reviewer reads it. The deadline (a clock reading) is left out."""
    settings = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "thinking": request.thinking,
        "effort": request.effort,
        "budget_tokens": request.budget_tokens,
        "idle_timeout": request.idle_timeout,
    }
    parts = ["=== settings ===", json.dumps(settings, sort_keys=True, indent=2)]
    for index, tool in enumerate(request.tools):
        parts += [f"=== tools[{index}] ===", json.dumps(tool, sort_keys=True, indent=2)]
    for index, block in enumerate(request.system):
        parts += [f"=== system[{index}] {_marks(block)}===", str(block.get("text", ""))]
    for number, message in enumerate(request.messages):
        for index, block in enumerate(message["content"]):
            parts += [
                f"=== messages[{number}] {message['role']} [{index}] {_marks(block)}===",
                str(block.get("text", "")) if block.get("type") == "text" else json.dumps(block),
            ]
    return "\n".join(parts) + "\n"


def _marks(block: dict[str, object]) -> str:
    cache = block.get("cache_control")
    return f"cache_control={json.dumps(cache, sort_keys=True)} " if cache else ""


@pytest.mark.parametrize("name", BUILTINS)
def test_the_rendered_request_matches_its_reviewed_snapshot(name: str) -> None:
    _, procedures = example_definitions()
    model = ScriptedModel([reply(text("Nothing."))] * 4)
    run(
        builtin_analyzer(name),
        example_conversation(CONVERSATION),
        model,
        procedures=procedures,
        options=RunOptions(run_id="snapshot"),
    )
    actual = rendered(model.requests[0])
    path = SNAPSHOTS / f"{name}.{CONVERSATION}.txt"
    if UPDATE:
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path.name} is missing: regenerate with POSTHOC_UPDATE_SNAPSHOTS=1"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, (
        f"the request of {name} changed; if intended, regenerate with "
        "POSTHOC_UPDATE_SNAPSHOTS=1 and review the diff"
    )
