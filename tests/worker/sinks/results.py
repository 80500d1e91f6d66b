"""Results and conversations for the sink tests, built without a model."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas.conversation import Conversation
from schemas.result import AnalysisResult, RecordedOutput, RunError, Timings

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "conversations"
STARTED = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def conversation() -> Conversation:
    """A real example conversation (the angry refund call)."""
    data = json.loads((EXAMPLES / "angry_refund.json").read_text(encoding="utf-8"))
    return Conversation.model_validate(data)


def result(
    analyzer: str,
    outputs: dict[str, list[RecordedOutput]],
    *,
    run_id: str = "run-1",
    status: str = "succeeded",
    error: RunError | None = None,
) -> AnalysisResult:
    payload: dict[str, Any] = {
        "run_id": run_id,
        "conversation_id": "c-123",
        "tenant_id": "acme",
        "analyzer": analyzer,
        "analyzer_version": "1.0.0",
        "status": status,
        "outputs": outputs,
        "error": error,
        "timings": Timings(started_at=STARTED, finished_at=STARTED + timedelta(seconds=12)),
    }
    return AnalysisResult.model_validate(payload)


def follow_ups(priority: str = "high", run_id: str = "run-1") -> AnalysisResult:
    return result(
        "follow_ups",
        {
            "follow_up": [
                RecordedOutput(
                    value={
                        "priority": priority,
                        "reason": "Customer threatens to cancel over a double charge <& more>.",
                        "customer_ask": "Refund the second charge today.",
                        "suggested_action": "Call back and issue the refund.",
                    },
                    evidence_turns=[1, 3],
                )
            ]
        },
        run_id=run_id,
    )


def next_steps() -> AnalysisResult:
    return result(
        "next_steps",
        {
            "next_step": [
                RecordedOutput(
                    value={
                        "action": "Issue the refund for the duplicate charge",
                        "owner": "billing",
                        "due": "today",
                        "reason": "The agent promised it and cannot issue refunds itself.",
                    },
                    evidence_turns=[2],
                ),
                RecordedOutput(
                    value={
                        "action": "Check the payment gateway for other duplicates",
                        "owner": "engineering",
                        "due": "this_week",
                        "reason": "A gateway retry may have charged other customers twice.",
                    },
                ),
            ]
        },
    )


def quality() -> AnalysisResult:
    return result(
        "quality",
        {
            "quality_assessment": [
                RecordedOutput(
                    value={
                        "resolution": "partially_resolved",
                        "success": "failure",
                        "rationale": "The refund was promised but not issued.",
                        "customer_sentiment": "negative",
                        "sentiment_trend": "improved",
                        "scores": {
                            "accuracy": 4,
                            "empathy": 3,
                            "efficiency": 2,
                            "policy_adherence": 5,
                        },
                    },
                    evidence_turns=[0, 4],
                )
            ]
        },
    )


def failed(run_id: str = "run-f") -> AnalysisResult:
    return result(
        "follow_ups",
        {},
        run_id=run_id,
        status="failed",
        error=RunError(type="deadline_exceeded", message="the run took longer than 600 s"),
    )
