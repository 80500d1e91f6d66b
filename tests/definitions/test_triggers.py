"""Analyzer triggers (`analyzers/definitions/triggers.py`) on the relaxed conversation contract:
outcomes compared after normalisation, and conversations without agent, channel or times."""

from __future__ import annotations

from typing import Any

import pytest

from analyzers.definitions.expressions import conversation_variables
from analyzers.definitions.triggers import analyzer_applies
from schemas import AnalyzerSpec, Conversation
from schemas.conversation import outcome_key


def spec(**trigger: Any) -> AnalyzerSpec:
    """An analyzer with the given trigger."""
    return AnalyzerSpec.model_validate(
        {
            "name": "a",
            "description": "d",
            "instructions": "i",
            "trigger": trigger,
            "outputs": [{"name": "o", "description": "d", "schema": {"type": "object"}}],
        }
    )


def minimal(**fields: Any) -> Conversation:
    """An id and turns, plus `fields`."""
    return Conversation.model_validate(
        {"conversation_id": "c-1", "turns": [{"role": "user", "text": "hi"}], **fields}
    )


@pytest.mark.parametrize(
    "outcome",
    [
        "early_disconnect",
        "EarlyDisconnect",
        "early-disconnect",
        "Early Disconnect",
        "EARLY_DISCONNECT",
    ],
)
def test_trigger_outcome_matches_after_normalisation(outcome: str) -> None:
    """Case, spaces, dashes and underscores do not matter; the outcome is kept verbatim."""
    conversation = minimal(outcome=outcome)
    assert conversation.outcome == outcome
    assert analyzer_applies(spec(outcomes=["early_disconnect"]), conversation).applies


def test_trigger_outcome_still_excludes_other_outcomes() -> None:
    """Normalisation does not make different words equal, and the reason names the outcome."""
    decision = analyzer_applies(spec(outcomes=["completed"]), minimal(outcome="Complete"))
    assert not decision.applies
    assert "'Complete'" in decision.reason


@pytest.mark.parametrize(
    ("text", "key"),
    [("Complete", "complete"), ("hung up", "hungup"), ("a-b_c d", "abcd"), ("  X ", "x")],
)
def test_outcome_key(text: str, key: str) -> None:
    """The comparison form drops separators and case."""
    assert outcome_key(text) == key


def test_minimal_conversation_against_each_criterion() -> None:
    """Without agent or channel, trigger lists on them exclude it with a reason; the rest apply."""
    conversation = minimal()
    assert analyzer_applies(spec(), conversation).applies
    assert analyzer_applies(spec(tenants=["default"]), conversation).applies
    on_channel = analyzer_applies(spec(channels=["voice"]), conversation)
    assert not on_channel.applies
    assert "channel None" in on_channel.reason
    on_agent = analyzer_applies(spec(agents=["bot"]), conversation)
    assert not on_agent.applies
    assert "agent None" in on_agent.reason


def test_expression_on_missing_times_is_false_not_an_error() -> None:
    """A trigger expression reading a time the conversation lacks does not apply."""
    decision = analyzer_applies(spec(expression="duration_seconds > 60.0"), minimal())
    assert not decision.applies
    holds = analyzer_applies(spec(expression="turn_count == 1"), minimal())
    assert holds.applies


@pytest.mark.parametrize("expression", ["turn_count >= 1", "turn_count >= 2", "metadata.x == 1"])
def test_variables_made_once_for_several_triggers_decide_the_same(expression: str) -> None:
    conversation = minimal()
    variables = conversation_variables(conversation)

    for analyzer in (spec(expression=expression), spec(channels=["chat"])):
        assert analyzer_applies(analyzer, conversation, variables) == analyzer_applies(
            analyzer, conversation
        )
