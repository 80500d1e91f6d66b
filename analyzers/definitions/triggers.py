"""Which analyzers run on a conversation, and which procedures apply to it. Pure functions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from analyzers.definitions.expressions import (
    ExpressionError,
    compile_expression,
    conversation_variables,
)
from analyzers.definitions.patterns import matches
from schemas.analyzer import AnalyzerSpec
from schemas.conversation import Conversation
from schemas.procedure import Procedure


@dataclass(frozen=True)
class Decision:
    """Whether something applies, and if not, why (a sentence a person can read)."""

    applies: bool
    reason: str = ""


def sample_point(conversation_id: str, analyzer: str) -> float:
    """A number in [0, 1) fixed for a conversation and analyzer, so reruns sample the same way."""
    digest = hashlib.sha256(f"{analyzer}\x00{conversation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def analyzer_applies(spec: AnalyzerSpec, conversation: Conversation) -> Decision:
    """Evaluate an analyzer's trigger against a conversation."""
    trigger = spec.trigger
    c = conversation
    checks: list[tuple[list[str], str, str]] = [
        (trigger.outcomes, c.outcome, "outcome"),
        (list(trigger.channels), c.channel, "channel"),
        (trigger.agents, c.agent_id, "agent"),
        (trigger.tenants, c.tenant_id, "tenant"),
    ]
    for allowed, actual, what in checks:
        if allowed and actual not in allowed:
            return Decision(False, f"{what} {actual!r} is not one of {list(allowed)}")
    if trigger.expression is not None:
        try:
            holds = compile_expression(trigger.expression).holds(conversation_variables(c))
        except ExpressionError as exc:
            return Decision(False, f"trigger expression could not be evaluated: {exc}")
        if not holds:
            return Decision(False, f"trigger expression is false: {trigger.expression}")
    if trigger.sample_rate < 1.0:
        point = sample_point(c.conversation_id, spec.name)
        if point >= trigger.sample_rate:
            return Decision(False, f"not sampled (rate {trigger.sample_rate})")
    return Decision(True)


def procedure_applies(procedure: Procedure, conversation: Conversation) -> Decision:
    """Whether a procedure is in scope for this conversation and its trigger matches.

    Scope: approved; the procedure's tenant (if any) is the conversation's; its owner agent (if
    any) is the conversation's agent unless it is shared. Trigger: every condition holds, and
    when patterns are given at least one matches something the customer said. A trigger with only
    a description applies (the description guides the model).
    """
    c = conversation
    if not procedure.approved:
        return Decision(False, "not approved")
    if procedure.tenant_id is not None and procedure.tenant_id != c.tenant_id:
        return Decision(False, f"belongs to tenant {procedure.tenant_id!r}")
    if procedure.agent_id is not None and procedure.agent_id != c.agent_id and not procedure.shared:
        return Decision(False, f"belongs to agent {procedure.agent_id!r} and is not shared")
    variables = conversation_variables(c)
    for condition in procedure.trigger.conditions:
        try:
            holds = compile_expression(condition).holds(variables)
        except ExpressionError as exc:
            return Decision(False, f"trigger condition could not be evaluated: {exc}")
        if not holds:
            return Decision(False, f"trigger condition is false: {condition}")
    if procedure.trigger.patterns:
        said = "\n".join(turn.text for turn in c.turns if turn.role == "user")
        if not any(matches(pattern, said) for pattern in procedure.trigger.patterns):
            return Decision(False, "no trigger pattern matches what the customer said")
    return Decision(True)
