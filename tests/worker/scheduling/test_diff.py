"""`posthoc diff`: two versions that differ in one field show that field's agreement and exactly
the conversations that changed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzers.model.protocol import ModelRequest, ModelTurn
from analyzers.testing import reply, text, tool_call
from schemas import AnalysisResult, AnalyzerSpec, RecordedOutput
from schemas.rerun import JobSummary, RerunSelection
from worker.catalog import Catalog
from worker.engine.batch import process_all
from worker.engine.runner import Engine
from worker.ledger import Ledger, ManualClock, RunPlan
from worker.ledger.jobs import JobLedger
from worker.scheduling import start_rerun_job
from worker.scheduling.diff import DiffReport, compare, diff_versions

from .helpers import conversation, engine_config, job_runner


def triage(version: str, instructions: str) -> AnalyzerSpec:
    return AnalyzerSpec.model_validate(
        {
            "name": "triage",
            "version": version,
            "description": "Flags conversations a person should look at.",
            "instructions": instructions,
            "outputs": [
                {
                    "name": "verdict",
                    "description": "The triage verdict.",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "topic": {"type": "string"},
                            "flagged": {"type": "boolean"},
                        },
                        "required": ["topic", "flagged"],
                    },
                }
            ],
        }
    )


@dataclass
class TriageModel:
    """Topic is always billing; v2 ('Be strict.') flags orders divisible by 3, v1 never flags."""

    async def complete(self, request: ModelRequest) -> ModelTurn:
        content = request.messages[-1]["content"]
        if isinstance(content, list) and any(b.get("type") == "tool_result" for b in content):
            return reply(text("Done."))
        everything = json.dumps([request.system, request.messages])
        strict = "Be strict." in everything
        order = int(everything.split("order ")[1].split(".")[0])
        verdict = {"topic": "billing", "flagged": strict and order % 3 == 0}
        return reply(
            tool_call(
                "record_output", {"output": "verdict", "value": verdict, "evidence_turns": [0]}
            )
        )

    async def count_tokens(self, request: ModelRequest) -> int:
        return 10


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.from_specs(
        [
            triage("1", "Triage the conversation."),
            triage("2", "Triage the conversation. Be strict."),
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


def test_diff_shows_the_one_field_that_changed_and_where(ledger: Ledger, catalog: Catalog) -> None:
    run_ids = []
    for index in range(9):
        ref = ledger.save_conversation(conversation(index))
        [run] = ledger.record_runs(ref.pk, [RunPlan("triage", "1")], trigger="webhook")
        run_ids.append(run.id)
    engine = Engine(ledger=ledger, catalog=catalog, model=TriageModel(), config=engine_config())
    asyncio.run(process_all(engine, run_ids, concurrency=4))
    job = start_rerun_job(
        ledger, catalog, RerunSelection(analyzer="triage", version="2"), default_model="m"
    )
    assert isinstance(job, JobSummary)
    asyncio.run(job_runner(ledger, catalog, TriageModel()).run(job.job_id))

    with JobLedger(ledger.engine).read() as connection:
        report = diff_versions(connection, "triage", "1", "2", job_id=job.job_id)

    assert report.compared == 9
    rates = {f.field: (f.agree, f.compared) for f in report.fields}
    assert rates == {"verdict": (6, 9), "verdict.flagged": (6, 9), "verdict.topic": (9, 9)}
    assert sorted(c.conversation_id for c in report.changed) == ["c-00000", "c-00003", "c-00006"]
    for changed in report.changed:
        assert [(c.field, c.before, c.after) for c in changed.changes] == [
            ("verdict.flagged", False, True)
        ]
    document = report.as_json()
    assert document["changed"][0]["changes"] == [
        {"field": "verdict.flagged", "from": False, "to": True}
    ]


def _result(run_id: str, values: list[Any]) -> AnalysisResult:
    return AnalysisResult(
        run_id=run_id,
        conversation_id=run_id,
        analyzer="a",
        analyzer_version="1",
        status="succeeded",
        outputs={"o": [RecordedOutput(value=v) for v in values]},
    )


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(_json_values, max_size=3), st.lists(_json_values, max_size=3)),
        max_size=5,
    )
)
def test_compare_never_fails_and_a_result_agrees_with_itself(
    pairs: list[tuple[list[Any], list[Any]]],
) -> None:
    results = [(_result(f"r{i}", a), _result(f"r{i}", b)) for i, (a, b) in enumerate(pairs)]
    report = compare(DiffReport("a", "1", "2", None), results)
    assert report.compared == len(pairs)
    assert all(0 <= f.agree <= f.compared for f in report.fields)
    same = compare(DiffReport("a", "1", "1", None), [(a, a) for a, _ in results])
    assert not same.changed
    assert all(f.rate == 1.0 for f in same.fields)
