"""What a rerun will cost, before it runs.

From stored usage when there is some: the mean cost of this analyzer's latest succeeded runs
(this version's, else any version's). Otherwise from token counts: the conversation's size in
tokens (about four characters each), read once per model turn the analyzer usually takes, plus
its output allowance, at the model's standard price. The batch price is half either way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analyzers.model.profiles import cost_of
from schemas.analyzer import AnalyzerSpec
from schemas.conversation import Conversation
from schemas.usage import Usage
from worker.ledger.tables import analysis_runs

runs = analysis_runs

SAMPLE_RUNS = 200
"""How many recent succeeded runs the stored-usage estimate averages."""
CHARS_PER_TOKEN = 4
TURNS_WITHOUT_HISTORY = 3
"""Model turns assumed for an analyzer never run before (read, record, finish)."""
OUTPUT_TOKENS_PER_TURN = 1_500


def stored_cost_per_run(connection: Connection, analyzer: str, version: str) -> float | None:
    """Mean USD of recent succeeded runs of `analyzer@version`, else of any version; None when
    it never succeeded."""
    for condition in (runs.c.analyzer_version == version, sa.true()):
        recent = (
            sa.select(runs.c.cost_usd)
            .where(
                runs.c.analyzer == analyzer,
                runs.c.status == "succeeded",
                runs.c.cost_usd.is_not(None),
                condition,
            )
            .order_by(runs.c.finished_at.desc())
            .limit(SAMPLE_RUNS)
            .subquery()
        )
        mean = connection.execute(sa.select(sa.func.avg(recent.c.cost_usd))).scalar_one_or_none()
        if mean is not None:
            return float(mean)
    return None


def token_cost(spec: AnalyzerSpec, conversation: Conversation, default_model: str) -> float:
    """USD for one run estimated from the conversation's size (no stored usage to go by)."""
    size = len(json.dumps(conversation.model_dump(mode="json"))) + len(spec.instructions)
    prompt = size // CHARS_PER_TOKEN + 1_000  # tools and system prompt
    turns = min(spec.model.max_turns, TURNS_WITHOUT_HISTORY)
    usage = Usage(
        input_tokens=prompt * turns,
        output_tokens=min(spec.model.max_tokens, OUTPUT_TOKENS_PER_TURN) * turns,
    )
    return cost_of(spec.model.id or default_model, usage).total_usd


def estimate(
    stored: float | None,
    spec: AnalyzerSpec,
    conversations: Sequence[Conversation],
    default_model: str,
) -> tuple[float, float]:
    """(USD per run, USD for all of them) at the standard price."""
    if not conversations:
        return (stored or 0.0), 0.0
    if stored is not None:
        return stored, stored * len(conversations)
    total = sum(token_cost(spec, c, default_model) for c in conversations)
    return total / len(conversations), total
