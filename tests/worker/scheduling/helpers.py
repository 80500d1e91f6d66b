"""Shared pieces of the rerun tests: a stateless fake model any number of runs can share at
once, stored conversations, and runs of the ledger's engine over them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from analyzers.model.protocol import ModelRequest, ModelTurn
from analyzers.testing import reply, text, tool_call
from schemas import AnalysisResult, Conversation
from schemas.usage import Cost, Usage
from worker.catalog import Catalog
from worker.engine.batch import process_all
from worker.engine.runner import Engine, EngineConfig
from worker.ledger import Ledger, RunPlan
from worker.scheduling import JobRunner

FOLLOW_UP = {
    "priority": "high",
    "reason": "The customer was charged twice and wants the second charge refunded.",
    "suggested_action": "Refund the duplicate charge and email the customer today.",
}
TURN_USAGE = Usage(input_tokens=2_000, output_tokens=200)


@dataclass
class PolicyModel:
    """Records one follow-up, then ends: two turns per run, the same usage each time.

    Stateless between runs (it reads the request), so concurrent runs can share it; `calls`
    counts model turns.
    """

    calls: int = 0
    requests: list[ModelRequest] = field(default_factory=list)

    async def complete(self, request: ModelRequest) -> ModelTurn:
        self.calls += 1
        self.requests.append(request)
        await asyncio.sleep(0)
        content = request.messages[-1]["content"]
        answered = isinstance(content, list) and any(
            block.get("type") == "tool_result" for block in content
        )
        if answered:
            return reply(text("Recorded one follow-up."), usage=TURN_USAGE)
        return reply(
            tool_call("record_follow_up", {"value": FOLLOW_UP, "evidence_turns": [0]}),
            usage=TURN_USAGE,
        )

    async def count_tokens(self, request: ModelRequest) -> int:
        return 100


def conversation(index: int, **overrides: Any) -> Conversation:
    data: dict[str, Any] = {
        "conversation_id": f"c-{index:05d}",
        "tenant_id": "acme" if index % 2 == 0 else "globex",
        "agent_id": "support-bot" if index % 3 else "sales-bot",
        "channel": "chat",
        "started_at": "2026-11-20T09:00:00Z",
        "ended_at": "2026-11-20T09:05:00Z",
        "outcome": "resolved" if index % 5 else "escalated",
        "turns": [
            {"role": "user", "text": f"I was billed twice, order {index}."},
            {"role": "agent", "text": "I see both charges; I will ask billing to refund one."},
        ],
    }
    data.update(overrides)
    return Conversation.model_validate(data)


def engine_config(worker_id: str = "test-host:1:a") -> EngineConfig:
    return EngineConfig(
        worker_id=worker_id,
        default_model="claude-sonnet-5-5",
        lease_seconds=60.0,
        heartbeat_seconds=30.0,
        retry_base_seconds=0.01,
        retry_max_seconds=0.02,
    )


def seed(ledger: Ledger, catalog: Catalog, count: int, analyzer: str = "follow_ups") -> list[str]:
    """Store `count` conversations and run `analyzer` once on each; return the run ids."""
    spec = catalog.get(analyzer)
    assert spec is not None
    run_ids = []
    for index in range(count):
        ref = ledger.save_conversation(conversation(index))
        [run] = ledger.record_runs(
            ref.pk,
            [RunPlan(spec.name, spec.version)],
            trigger="webhook",
            conversation_version_id=ref.version_id,
        )
        run_ids.append(run.id)
    engine = Engine(ledger=ledger, catalog=catalog, model=PolicyModel(), config=engine_config())
    asyncio.run(process_all(engine, run_ids, concurrency=16))
    return run_ids


def job_runner(
    ledger: Ledger, catalog: Catalog, model: Any = None, *, concurrency: int = 4, **kwargs: Any
) -> JobRunner:
    return JobRunner(
        ledger=ledger,
        catalog=catalog,
        model=model or PolicyModel(),
        config=engine_config(kwargs.pop("worker_id", "test-host:1:a")),
        concurrency=concurrency,
        **kwargs,
    )


def seed_results(
    ledger: Ledger, catalog: Catalog, count: int, analyzer: str = "follow_ups"
) -> list[str]:
    """Like `seed`, without the model: each old run is completed with a small stored result
    (fast enough for a thousand conversations)."""
    spec = catalog.get(analyzer)
    assert spec is not None
    run_ids = []
    for index in range(count):
        stored = conversation(index)
        ref = ledger.save_conversation(stored)
        [run] = ledger.record_runs(
            ref.pk,
            [RunPlan(spec.name, spec.version)],
            trigger="webhook",
            conversation_version_id=ref.version_id,
        )
        assert ledger.claim(run.id, "seeder", 60) is not None
        result = AnalysisResult(
            run_id=run.id,
            conversation_id=stored.conversation_id,
            tenant_id=stored.tenant_id,
            analyzer=spec.name,
            analyzer_version=spec.version,
            status="succeeded",
            outputs={"follow_up": []},
            cost=Cost(input_usd=0.01),
        )
        assert ledger.complete(run.id, "seeder", result)
        run_ids.append(run.id)
    return run_ids
