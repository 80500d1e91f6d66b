"""Chaining (`after:`): a cheap triage flags 2 of 10 conversations and the expensive child runs
on exactly those 2, recorded with the parent's result and told its outputs; cycles are a
load-time problem with a location."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from analyzers.definitions.checks import check_definitions
from analyzers.definitions.loading import load_paths
from analyzers.model.protocol import ModelRequest, ModelTurn
from analyzers.testing import reply, text, tool_call
from schemas import AnalyzerSpec
from worker.catalog import Catalog
from worker.engine.batch import process_all
from worker.engine.runner import Engine
from worker.intake import record
from worker.ledger import Ledger, ManualClock

from .helpers import conversation, engine_config

FLAGGED = {3, 7}
OBJECT = {"type": "object", "properties": {"flagged": {"type": "boolean"}}, "required": ["flagged"]}


def analyzer(name: str, instructions: str, **extra: Any) -> AnalyzerSpec:
    return AnalyzerSpec.model_validate(
        {
            "name": name,
            "description": f"The {name} analyzer.",
            "instructions": instructions,
            "outputs": [{"name": "verdict", "description": "What it found.", "schema": OBJECT}],
            **extra,
        }
    )


@dataclass
class ChainModel:
    """Triage flags orders 3 and 7; the deep review always flags, and notes what it was told."""

    briefs: list[str] = field(default_factory=list)

    async def complete(self, request: ModelRequest) -> ModelTurn:
        content = request.messages[-1]["content"]
        if isinstance(content, list) and any(b.get("type") == "tool_result" for b in content):
            return reply(text("Done."))
        everything = json.dumps([request.system, request.messages])
        order = int(everything.split("order ")[1].split(".")[0])
        if "Review deeply." in everything:
            self.briefs.append(everything)
            flagged = True
        else:
            flagged = order in FLAGGED
        return reply(
            tool_call(
                "record_output",
                {"output": "verdict", "value": {"flagged": flagged}, "evidence_turns": [0]},
            )
        )

    async def count_tokens(self, request: ModelRequest) -> int:
        return 10


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.from_specs(
        [
            analyzer("triage", "Triage the conversation."),
            analyzer(
                "deep_review",
                "Review deeply.",
                after={
                    "analyzer": "triage",
                    "when": "outputs.verdict.exists(v, !v.unknown && v.value.flagged)",
                },
            ),
        ]
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}", now=ManualClock())
    ledger.migrate()
    try:
        yield ledger
    finally:
        ledger.dispose()


def test_triage_flags_two_of_ten_and_the_child_runs_on_exactly_those(
    ledger: Ledger, catalog: Catalog
) -> None:
    recorded = record(
        ledger,
        catalog,
        [conversation(index) for index in range(10)],
        analyzers=None,
        trigger="webhook",
        max_attempts=3,
        idempotent=True,
    )
    # Only the triage is triggered by conversations; the child waits for it.
    assert {run.analyzer for _, run in recorded} == {"triage"}
    model = ChainModel()
    engine = Engine(ledger=ledger, catalog=catalog, model=model, config=engine_config())
    batch = asyncio.run(process_all(engine, [run.id for _, run in recorded], concurrency=4))

    children = [ledger.child_runs(run.id) for _, run in recorded]
    flagged = {
        conversation.conversation_id
        for (conversation, _), found in zip(recorded, children, strict=True)
        if found
    }
    assert flagged == {"c-00003", "c-00007"}
    for (_, parent), found in zip(recorded, children, strict=True):
        for child in found:
            assert (child.analyzer, child.trigger, child.status) == (
                "deep_review",
                "chain",
                "succeeded",
            )
            assert (
                child.conversation_version_id == ledger.get_run(parent.id).conversation_version_id
            )
        assert batch.outcomes[parent.id].children == tuple(child.id for child in found)
    assert len(model.briefs) == 2
    assert all('\\"flagged\\": true' in brief for brief in model.briefs)
    assert all("What the analyzer before you found" in brief for brief in model.briefs)


def test_a_chain_cycle_is_a_located_load_time_problem(tmp_path: Path) -> None:
    for name, parent in (("alpha", "beta"), ("beta", "gamma"), ("gamma", "alpha")):
        (tmp_path / f"{name}.yaml").write_text(
            f"""kind: analyzer
name: {name}
description: Part of a loop.
after:
  analyzer: {parent}
instructions: Look.
outputs:
  - name: verdict
    description: What it found.
    schema: {{type: object}}
""",
            encoding="utf-8",
        )
    (tmp_path / "orphan.yaml").write_text(
        (tmp_path / "alpha.yaml").read_text().replace("alpha", "orphan").replace("beta", "nobody"),
        encoding="utf-8",
    )
    loaded = load_paths([tmp_path])
    problems = [str(p) for p in check_definitions(loaded) if p.rule.startswith("after-")]
    assert len(problems) == 4
    alpha = next(p for p in problems if "alpha.yaml" in p)
    assert "alpha.yaml:5: after.analyzer:" in alpha
    assert "alpha -> beta -> gamma -> alpha" in alpha
    orphan = next(p for p in problems if "orphan.yaml" in p)
    assert "'nobody', which is not a loaded analyzer" in orphan
