"""A rerun through the Message Batches API, via the real SDK against the fake: the results equal
those of the direct path, each run takes several batch rounds, and the cost is the batch price."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analyzers.fakes import (
    FakeMessagesAPI,
    FakeReply,
    serve_fake_messages_api,
    simulated_analyst,
)
from analyzers.model.anthropic import AnthropicModel, build_anthropic_model, build_batch_model
from analyzers.model.batching import BatchingModel
from analyzers.model.profiles import BATCH_PRICE_FACTOR
from schemas import AnalysisResult
from schemas.rerun import JobSummary, RerunSelection
from worker.catalog import Catalog
from worker.ledger import Ledger
from worker.ledger.jobs import JobLedger, job_runs
from worker.scheduling import JobRunner, start_rerun_job

from .helpers import engine_config, seed_results

CONVERSATIONS = 4
TOOL_USE_ID = re.compile(r'"toolu_[A-Za-z0-9_-]*"')


def same_answer_streamed_or_not(body: dict[str, Any]) -> FakeReply:
    """The simulated analyst seeds its answer with a hash of the whole body. A batch request
    cannot say `stream`, and the fake derives tool-use ids from the body it answered: leave
    both out of the seed, so the same prompt gets the same answer on either path."""
    unstreamed = json.dumps({key: value for key, value in body.items() if key != "stream"})
    numbered: dict[str, str] = {}
    renamed = TOOL_USE_ID.sub(
        lambda m: numbered.setdefault(m.group(0), f'"toolu_{len(numbered)}"'), unstreamed
    )
    return simulated_analyst(json.loads(renamed))


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    ledger.migrate()
    try:
        yield ledger
    finally:
        ledger.dispose()


def _rerun(
    ledger: Ledger, catalog: Catalog, *, batch: bool
) -> tuple[JobSummary, dict[int, AnalysisResult], FakeMessagesAPI, int]:
    job = start_rerun_job(
        ledger, catalog, RerunSelection(analyzer="follow_ups"), default_model="m", batch=batch
    )
    assert isinstance(job, JobSummary)
    # A fresh cache for each path; the analyst answers the prompt, however it is delivered.
    api = FakeMessagesAPI(responder=same_answer_streamed_or_not, batch_seconds=0.02)
    with serve_fake_messages_api(api) as base_url:
        config = engine_config()
        model: BatchingModel | AnthropicModel
        if batch:
            model = build_batch_model(
                api_key="k", base_url=base_url, gather_seconds=0.05, poll_seconds=0.02
            )
            config = dataclasses.replace(config, price_factor=BATCH_PRICE_FACTOR)
        else:
            model = build_anthropic_model(api_key="k", base_url=base_url, pools=1)

        async def go() -> JobSummary:
            try:
                runner = JobRunner(ledger=ledger, catalog=catalog, model=model, config=config)
                return await runner.run(job.job_id)
            finally:
                await model.aclose()

        summary = asyncio.run(go())
    with JobLedger(ledger.engine).read() as connection:
        pairs = job_runs(connection, job.job_id)
    results = dict(zip([pk for pk, _ in pairs], ledger.results([r for _, r in pairs]), strict=True))
    rounds = model.batches_sent if isinstance(model, BatchingModel) else 0
    return summary, results, api, rounds


def test_a_batch_rerun_equals_the_direct_one_at_half_the_price(ledger: Ledger) -> None:
    catalog = Catalog.load()
    seed_results(ledger, catalog, CONVERSATIONS)
    direct, direct_results, direct_api, _ = _rerun(ledger, catalog, batch=False)
    batched, batch_results, batch_api, rounds = _rerun(ledger, catalog, batch=True)

    assert direct.succeeded == batched.succeeded == CONVERSATIONS
    assert not any("/batches" in r.path for r in direct_api.requests)
    assert any(r.path == "/v1/messages/batches" for r in batch_api.requests)
    assert not any(r.path == "/v1/messages" for r in batch_api.requests)
    turns = max(result.model_turns for result in batch_results.values())
    assert turns >= 2
    assert rounds >= turns  # each turn of a run is its own batch round
    for pk, result in batch_results.items():
        twin = direct_results[pk]
        assert result.outputs == twin.outputs
        assert result.usage == twin.usage
        assert result.cost.total_usd == pytest.approx(twin.cost.total_usd * BATCH_PRICE_FACTOR)
    assert batched.spent_usd == pytest.approx(direct.spent_usd * BATCH_PRICE_FACTOR, abs=1e-5)
    # A batch job's estimate is at the batch price; a direct one shows both.
    assert batched.estimated_usd == batched.estimated_batch_usd
    assert direct.estimated_batch_usd == pytest.approx(direct.estimated_usd * BATCH_PRICE_FACTOR)
