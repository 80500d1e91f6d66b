"""Shared builders for runtime tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import analyzers
from analyzers.definitions.loading import load_paths
from analyzers.model.protocol import ModelClient
from analyzers.runtime.session import RunOptions
from analyzers.tools.base import HttpRequest, HttpResponse
from schemas import AnalysisResult, AnalyzerSpec, Conversation, Procedure

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def example_conversation(name: str) -> Conversation:
    """One of the example conversations, by file stem."""
    loaded = load_paths([EXAMPLES / "conversations" / f"{name}.json"])
    assert not loaded.problems, loaded.problems
    return loaded.conversations[0].value


def builtin_analyzer(name: str) -> AnalyzerSpec:
    """A built-in analyzer, by name."""
    loaded = load_paths([ROOT / "analyzers" / "builtin" / f"{name}.yaml"])
    assert not loaded.problems, loaded.problems
    return loaded.analyzers[0].value


def example_definitions() -> tuple[dict[str, AnalyzerSpec], list[Procedure]]:
    """The example analyzers by name, and the example procedures."""
    loaded = load_paths([EXAMPLES / "analyzers", EXAMPLES / "procedures"])
    assert not loaded.problems, loaded.problems
    return {a.value.name: a.value for a in loaded.analyzers}, [p.value for p in loaded.procedures]


def conversation(turns: int = 6, **overrides: Any) -> Conversation:
    """A small synthetic conversation with numbered turns."""
    start = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    data: dict[str, Any] = {
        "conversation_id": "c-test",
        "tenant_id": "acme",
        "agent_id": "support-bot",
        "channel": "chat",
        "started_at": start.isoformat(),
        "ended_at": (start + timedelta(minutes=turns)).isoformat(),
        "outcome": "escalated",
        "turns": [
            {
                "role": "user" if index % 2 else "agent",
                "text": f"turn number {index} says something",
                "at": (start + timedelta(seconds=30 * index)).isoformat(),
            }
            for index in range(turns)
        ],
    }
    data.update(overrides)
    return Conversation.model_validate(data)


def run(
    spec: AnalyzerSpec,
    conv: Conversation,
    model: ModelClient,
    *,
    procedures: Sequence[Procedure] = (),
    companions: Sequence[AnalyzerSpec] = (),
    options: RunOptions | None = None,
) -> AnalysisResult:
    """Run the real runtime synchronously."""
    return asyncio.run(
        analyzers.run(
            spec,
            conv,
            model=model,
            procedures=procedures,
            companions=companions,
            options=options,
        )
    )


@dataclass
class RecordingTransport:
    """An HTTP transport fake: canned responses by URL prefix, every request kept."""

    responses: dict[str, HttpResponse]
    requests: list[HttpRequest] = field(default_factory=list)

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Answer from the canned responses, 404 for anything else."""
        self.requests.append(request)
        for prefix, response in self.responses.items():
            if request.url.startswith(prefix):
                return response
        return HttpResponse(status=404, body={"error": "not found"})
