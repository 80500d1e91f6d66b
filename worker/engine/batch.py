"""`posthoc run`: every run of a batch in this process, many at once, with no broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from schemas.conversation import Conversation
from schemas.result import AnalysisResult, RunError
from worker.engine.runner import Engine, ProcessOutcome
from worker.ledger import Ledger, RunRecord


@dataclass(frozen=True)
class BatchOutcome:
    """What happened to each run id of the batch."""

    outcomes: dict[str, ProcessOutcome]


async def process_all(
    engine: Engine,
    run_ids: Sequence[str],
    *,
    concurrency: int,
    on_done: Callable[[str, ProcessOutcome], None] = lambda _run_id, _outcome: None,
    sleep: Callable[[float], object] = asyncio.sleep,
) -> BatchOutcome:
    """Process `run_ids` with at most `concurrency` in flight.

    A transient failure puts the run back in the ledger with a backoff; here its coroutine waits
    out the backoff and processes it again, until it succeeds, fails, or runs out of attempts.
    """
    slots = asyncio.Semaphore(concurrency)
    outcomes: dict[str, ProcessOutcome] = {}

    async def one(run_id: str) -> None:
        while True:
            async with slots:
                outcome = await engine.process(run_id)
            if outcome.status != "retry":
                break
            await sleep(outcome.retry_in or 0.0)  # type: ignore[misc]
        outcomes[run_id] = outcome
        on_done(run_id, outcome)
        # Chained runs (`after:`) recorded with the result run here too, in this batch.
        await asyncio.gather(*(one(child) for child in outcome.children))

    await asyncio.gather(*(one(run_id) for run_id in run_ids))
    return BatchOutcome(outcomes)


@dataclass(frozen=True)
class AnalyzerTotals:
    """Per-analyzer figures for the summary table."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: float = 0.0


def summarize(results: Sequence[AnalysisResult]) -> dict[str, AnalyzerTotals]:
    """Totals by analyzer, sorted by name."""
    totals: dict[str, AnalyzerTotals] = {}
    for result in sorted(results, key=lambda r: r.analyzer):
        before = totals.get(result.analyzer, AnalyzerTotals())
        totals[result.analyzer] = AnalyzerTotals(
            succeeded=before.succeeded + (result.status == "succeeded"),
            failed=before.failed + (result.status == "failed"),
            skipped=before.skipped + (result.status == "skipped"),
            input_tokens=before.input_tokens + result.usage.prompt_tokens,
            output_tokens=before.output_tokens + result.usage.output_tokens,
            cache_read_tokens=before.cache_read_tokens + result.usage.cache_read_input_tokens,
            cost_usd=before.cost_usd + result.cost.total_usd,
        )
    return totals


def collect_results(
    ledger: Ledger, runs: Sequence[tuple[Conversation, RunRecord]]
) -> list[AnalysisResult]:
    """One result per run, in order: the stored one, or one made from the ledger's record for
    runs that never produced one (skipped, or dead-lettered before the model ran)."""
    stored = {result.run_id: result for result in ledger.results([run.id for _, run in runs])}
    results = []
    for conversation, recorded in runs:
        if recorded.id in stored:
            results.append(stored[recorded.id])
            continue
        run = ledger.get_run(recorded.id)
        failed = run.status == "failed"
        results.append(
            AnalysisResult(
                run_id=run.id,
                conversation_id=conversation.conversation_id,
                tenant_id=conversation.tenant_id,
                analyzer=run.analyzer,
                analyzer_version=run.analyzer_version,
                status="failed" if failed else "skipped",
                skip_reason=None if failed else (run.skip_reason or f"run is {run.status}"),
                error=RunError(type=run.error_type or "unknown", message=run.error_message or "")
                if failed
                else None,
            )
        )
    return results
