"""Which analyzers run on a conversation. Pure functions.

Which procedures apply is decided in `analyzers.procedures.matching`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analyzers.definitions.expressions import (
    ExpressionError,
    compile_expression,
    conversation_variables,
)
from schemas.analyzer import AnalyzerSpec
from schemas.conversation import Conversation, outcome_key


@dataclass(frozen=True)
class Decision:
    """Whether something applies, and if not, why (a sentence a person can read)."""

    applies: bool
    reason: str = ""


def sample_point(conversation_id: str, analyzer: str) -> float:
    """A number in [0, 1) fixed for a conversation and analyzer, so reruns sample the same way."""
    digest = hashlib.sha256(f"{analyzer}\x00{conversation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def analyzer_applies(
    spec: AnalyzerSpec,
    conversation: Conversation,
    variables: Mapping[str, Any] | None = None,
) -> Decision:
    """Evaluate an analyzer's trigger against a conversation (`variables`: its
    `conversation_variables`, when the caller has them already)."""
    trigger = spec.trigger
    c = conversation
    if trigger.outcomes:
        wanted = {outcome_key(outcome) for outcome in trigger.outcomes}
        if outcome_key(c.outcome) not in wanted:
            return Decision(False, f"outcome {c.outcome!r} is not one of {trigger.outcomes}")
    checks: list[tuple[list[str], str | None, str]] = [
        (list(trigger.channels), c.channel, "channel"),
        (trigger.agents, c.agent_id, "agent"),
        (trigger.tenants, c.tenant_id, "tenant"),
    ]
    for allowed, actual, what in checks:
        if allowed and actual not in allowed:
            return Decision(False, f"{what} {actual!r} is not one of {list(allowed)}")
    if trigger.expression is not None:
        try:
            expression = compile_expression(trigger.expression)
            holds = expression.holds(conversation_variables(c) if variables is None else variables)
        except ExpressionError as exc:
            return Decision(False, f"trigger expression could not be evaluated: {exc}")
        if not holds:
            return Decision(False, f"trigger expression is false: {trigger.expression}")
    if trigger.sample_rate < 1.0:
        point = sample_point(c.conversation_id, spec.name)
        if point >= trigger.sample_rate:
            return Decision(False, f"not sampled (rate {trigger.sample_rate})")
    return Decision(True)
