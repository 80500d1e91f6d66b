"""Pinned runs end to end, on both ledger backends: the worker executes the analyzer snapshot and
the conversation version a run was recorded for, not what is loaded or stored when it claims it;
several versions of one analyzer run side by side; every attempt's spend reaches the ledger."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from analyzers.errors import TransientModelError
from analyzers.model.protocol import ModelRequest
from analyzers.testing import ScriptedModel, reply, text, tool_call
from schemas import AnalysisResult, Conversation
from schemas.usage import Usage
from worker import intake
from worker.catalog import Catalog
from worker.engine.runner import Engine, EngineConfig
from worker.ledger import Ledger, ManualClock, RunPlan, RunRecord

ANALYZER = """\
kind: analyzer
name: churn_watch
version: "{version}"
description: Whether the customer said they would leave.
instructions: |
  {instructions}
procedures: [retention_policy]
tools: [get_turns]
outputs:
  - name: churn_risk
    description: Whether the customer said they would leave.
    schema: {{type: string, enum: [low, high]}}
    cardinality: one
    required: true
"""

PROCEDURE = """\
kind: procedure
name: retention_policy
version: {version}
description: How to judge churn.
trigger:
  description: When the customer mentions leaving.
  # A pattern that matches every conversation here, so the trigger is decided without the
  # model's description check (which would take a scripted turn of its own).
  patterns: ["internet * drop|cancel|leave"]
approved: true
created_by: admin
content: |
  {content}
"""

V1_INSTRUCTIONS = "Version one: judge churn by the words cancel and leave."
V2_INSTRUCTIONS = "Version two: judge churn by the customer's tone alone."
P1_CONTENT = "Policy one: a mention of a competitor is high risk."
P2_CONTENT = "Policy two: only an explicit cancellation is high risk."


def write_definitions(folder: Path, *, version: str, instructions: str, policy: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"churn_watch_{version}.yaml").write_text(
        ANALYZER.format(version=version, instructions=instructions), encoding="utf-8"
    )
    content = P1_CONTENT if policy == 1 else P2_CONTENT
    (folder / f"retention_policy_{policy}.yaml").write_text(
        PROCEDURE.format(version=policy, content=content), encoding="utf-8"
    )
    return folder


def conversation(last_words: str = "I will cancel and go to a competitor.") -> Conversation:
    return Conversation.model_validate(
        {
            "conversation_id": "c-pinned",
            "tenant_id": "acme",
            "agent_id": "support-bot",
            "channel": "chat",
            "started_at": "2026-11-20T09:00:00Z",
            "ended_at": "2026-11-20T09:05:00Z",
            "outcome": "resolved",
            "turns": [
                {"role": "user", "text": "My internet drops every evening."},
                {"role": "agent", "text": "I have reset the line."},
                {"role": "user", "text": last_words},
            ],
        }
    )


def records(value: str = "high", usage: Usage | None = None) -> list[Any]:
    return [
        reply(
            tool_call("record_churn_risk", {"value": value, "evidence_turns": [2]}),
            usage=usage,
        ),
        reply(text("Recorded."), usage=usage),
    ]


def engine(ledger: Ledger, catalog: Catalog, model: ScriptedModel) -> Engine:
    return Engine(
        ledger=ledger,
        catalog=catalog,
        model=model,
        config=EngineConfig(worker_id="host:pinned", default_model="claude-sonnet-5-5"),
        jitter=lambda: 0.0,
    )


def first_message(request: ModelRequest) -> str:
    """The text of the first user message: the analyzer's brief."""
    content = request.messages[0]["content"]
    return "\n".join(block.get("text", "") for block in content if block.get("type") == "text")


def only_result(ledger: Ledger, run_id: str) -> AnalysisResult:
    [result] = ledger.results([run_id])
    return result


def record(
    ledger: Ledger, catalog: Catalog, convo: Conversation, names: list[str] | None = None
) -> list[RunRecord]:
    return [
        run
        for _, run in intake.record(
            ledger,
            catalog,
            [convo],
            analyzers=names,
            trigger="webhook",
            max_attempts=3,
            idempotent=False,
        )
    ]


def test_a_run_recorded_with_v1_runs_v1_after_the_yaml_changed_to_v2(
    ledger: Ledger, tmp_path: Path
) -> None:
    v1 = Catalog.load(
        [write_definitions(tmp_path / "v1", version="1", instructions=V1_INSTRUCTIONS, policy=1)],
        builtins=False,
    )
    [run] = record(ledger, v1, conversation())
    assert run.status == "queued"
    assert run.spec_hash is not None
    recorded = ledger.get_snapshot(run.spec_hash)
    assert recorded.spec.version == "1"
    assert V1_INSTRUCTIONS in recorded.brief
    assert [p.version for p in recorded.procedures] == [1]

    # The YAML is edited to v2 (and the procedure upgraded) before any worker claims the run.
    v2 = Catalog.load(
        [write_definitions(tmp_path / "v2", version="2", instructions=V2_INSTRUCTIONS, policy=2)],
        builtins=False,
    )
    model = ScriptedModel(records())
    outcome = asyncio.run(engine(ledger, v2, model).process(run.id))

    assert outcome.status == "succeeded"
    result = only_result(ledger, run.id)
    assert result.analyzer_version == "1"
    assert result.provenance is not None
    assert result.provenance.analyzer_version == "1"
    assert result.provenance.spec_hash == run.spec_hash == recorded.spec_hash()
    brief_sent = first_message(model.requests[0])
    assert V1_INSTRUCTIONS in brief_sent
    assert P1_CONTENT in brief_sent
    assert V2_INSTRUCTIONS not in brief_sent
    assert P2_CONTENT not in brief_sent
    # The snapshot's brief is exactly what the analyzer was told.
    assert recorded.brief in brief_sent


def test_a_conversation_re_sent_while_its_run_is_queued_is_analysed_as_recorded(
    ledger: Ledger, tmp_path: Path
) -> None:
    catalog = Catalog.load(
        [write_definitions(tmp_path / "v1", version="1", instructions=V1_INSTRUCTIONS, policy=1)],
        builtins=False,
    )
    first = conversation("I will cancel and go to a competitor.")
    [run] = record(ledger, catalog, first)
    resent = conversation("Actually it works now, thank you, I am staying.")
    ref = ledger.save_conversation(resent)
    assert ref.changed
    assert ref.version == 2
    assert ledger.get_conversation(ref.pk) == resent  # the current content is the new one

    model = ScriptedModel(records())
    asyncio.run(engine(ledger, catalog, model).process(run.id))

    sent_system = "\n".join(block["text"] for block in model.requests[0].system)
    assert "go to a competitor" in sent_system
    assert "I am staying" not in sent_system
    result = only_result(ledger, run.id)
    assert result.provenance is not None
    assert result.provenance.transcript_hash == first.content_hash()


def test_two_versions_loaded_side_by_side_are_selected_by_name_at_version(
    ledger: Ledger, tmp_path: Path
) -> None:
    folder = tmp_path / "both"
    write_definitions(folder, version="1", instructions=V1_INSTRUCTIONS, policy=1)
    write_definitions(folder, version="2", instructions=V2_INSTRUCTIONS, policy=2)
    catalog = Catalog.load([folder], builtins=False)
    assert list(catalog.versions["churn_watch"]) == ["1", "2"]
    assert catalog.analyzers["churn_watch"].version == "2"  # the newest is the default

    [default] = record(ledger, catalog, conversation(), ["churn_watch"])
    [older] = record(ledger, catalog, conversation(), ["churn_watch@1"])
    assert (default.analyzer_version, older.analyzer_version) == ("2", "1")
    assert default.spec_hash != older.spec_hash

    for run, instructions, other in (
        (older, V1_INSTRUCTIONS, V2_INSTRUCTIONS),
        (default, V2_INSTRUCTIONS, V1_INSTRUCTIONS),
    ):
        model = ScriptedModel(records())
        asyncio.run(engine(ledger, catalog, model).process(run.id))
        brief_sent = first_message(model.requests[0])
        assert instructions in brief_sent
        assert other not in brief_sent
        assert only_result(ledger, run.id).analyzer_version == run.analyzer_version
    # Both procedure versions are loaded: each run resolved the newest, policy 2.
    assert [p.version for p in ledger.get_snapshot(older.spec_hash or "").procedures] == [2]


def test_every_attempts_spend_is_recorded_and_the_run_is_their_sum(
    ledger: Ledger, clock: ManualClock, tmp_path: Path
) -> None:
    catalog = Catalog.load(
        [write_definitions(tmp_path / "v1", version="1", instructions=V1_INSTRUCTIONS, policy=1)],
        builtins=False,
    )
    [run] = record(ledger, catalog, conversation())
    first_turn = Usage(
        input_tokens=1000,
        output_tokens=200,
        cache_read_input_tokens=3000,
        cache_creation_input_tokens=500,
    )
    later_turn = Usage(input_tokens=10, output_tokens=5)
    model = ScriptedModel(
        [
            # Attempt 1: one turn that spends, then the model is overloaded mid-run.
            reply(tool_call("get_turns", {"first": 0, "last": 2}), usage=first_turn),
            TransientModelError("overloaded", retry_after=1.0),
            # Attempt 2 succeeds.
            *records(usage=later_turn),
        ]
    )
    worker = engine(ledger, catalog, model)
    assert asyncio.run(worker.process(run.id)).status == "retry"

    retried = ledger.get_run(run.id)
    assert retried.status == "queued"
    assert (retried.input_tokens, retried.output_tokens) == (1000, 200)
    assert retried.cost_usd is not None
    assert retried.cost_usd > 0
    failed_cost = retried.cost_usd

    clock.advance(60)
    assert asyncio.run(worker.process(run.id)).status == "succeeded"

    attempts = ledger.attempts(run.id)
    assert [a.outcome for a in attempts] == ["retry", "succeeded"]
    assert [
        (a.input_tokens, a.output_tokens, a.cache_read_input_tokens, a.cache_creation_input_tokens)
        for a in attempts
    ] == [(1000, 200, 3000, 500), (20, 10, 0, 0)]
    done = ledger.get_run(run.id)
    assert (done.input_tokens, done.output_tokens) == (1020, 210)
    assert (done.cache_read_input_tokens, done.cache_creation_input_tokens) == (3000, 500)
    assert attempts[0].cost_usd == pytest.approx(failed_cost)
    assert done.cost_usd == pytest.approx(sum(a.cost_usd or 0.0 for a in attempts))
    assert attempts[1].cost_usd == pytest.approx(only_result(ledger, run.id).cost.total_usd)


def test_a_worker_that_dies_mid_run_is_replaced_by_one_running_the_same_snapshot(
    ledger: Ledger, clock: ManualClock, tmp_path: Path
) -> None:
    """Worker A claims the run and dies without a word; by the time its lease runs out the
    fleet has been redeployed with v2. Worker B still runs v1, and only B's spend is counted."""
    v1 = Catalog.load(
        [write_definitions(tmp_path / "v1", version="1", instructions=V1_INSTRUCTIONS, policy=1)],
        builtins=False,
    )
    [run] = record(ledger, v1, conversation())
    assert ledger.claim(run.id, "host:dead:1", 30) is not None  # A, which then dies
    clock.advance(31)
    v2 = Catalog.load(
        [write_definitions(tmp_path / "v2", version="2", instructions=V2_INSTRUCTIONS, policy=2)],
        builtins=False,
    )
    model = ScriptedModel(records(usage=Usage(input_tokens=40, output_tokens=4)))

    assert asyncio.run(engine(ledger, v2, model).process(run.id)).status == "succeeded"

    assert [a.outcome for a in ledger.attempts(run.id)] == ["expired", "succeeded"]
    assert V1_INSTRUCTIONS in first_message(model.requests[0])
    result = only_result(ledger, run.id)
    assert result.provenance is not None
    assert result.provenance.spec_hash == run.spec_hash
    done = ledger.get_run(run.id)
    assert (done.input_tokens, done.output_tokens) == (80, 8)


def test_a_run_without_a_snapshot_runs_only_its_exact_recorded_version(
    ledger: Ledger, tmp_path: Path
) -> None:
    """Runs recorded before snapshots existed: the loaded analyzer of their recorded version,
    and never another version of the same name."""
    catalog = Catalog.load(
        [write_definitions(tmp_path / "v2", version="2", instructions=V2_INSTRUCTIONS, policy=2)],
        builtins=False,
    )
    ref = ledger.save_conversation(conversation())
    [old, current] = ledger.record_runs(
        ref.pk, [RunPlan("churn_watch", "1"), RunPlan("churn_watch", "2")], trigger="cli"
    )
    model = ScriptedModel(records())
    worker = engine(ledger, catalog, model)

    assert asyncio.run(worker.process(old.id)).status == "failed"
    failed = ledger.get_run(old.id)
    assert failed.error_type == "config_error"
    assert "version '1' is not loaded" in (failed.error_message or "")
    assert "['2']" in (failed.error_message or "")
    assert model.requests == []

    assert asyncio.run(worker.process(current.id)).status == "succeeded"
    assert V2_INSTRUCTIONS in first_message(model.requests[0])
