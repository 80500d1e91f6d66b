"""Long conversations: read in a window that keeps the ending; `truncated` said honestly."""

from __future__ import annotations

from analyzers.testing import ScriptedModel, reply, text, tool_call
from schemas import AnalyzerSpec
from tests.analyzers.helpers import builtin_analyzer, example_conversation, run

FOLLOW_UP = {
    "priority": "high",
    "reason": "Customer moves next month and wants the service transferred.",
    "customer_ask": "A call back from sales about moving the service.",
    "suggested_action": "Have sales call the customer this week.",
}


def small_window(spec: AnalyzerSpec, tokens: int = 6_000) -> AnalyzerSpec:
    """The analyzer with a small input limit, so a long conversation must be windowed."""
    return spec.model_copy(
        update={"model": spec.model.model_copy(update={"max_input_tokens": tokens})}
    )


def conversation_block(model: ScriptedModel) -> str:
    """The conversation block of the first request."""
    return str(model.requests[0].system[1]["text"])


def test_a_long_conversation_keeps_its_opening_and_its_ending() -> None:
    """Over the limit, the block shows the first turns and the last ones, says which turns are
    left out and how to read them, and the result is marked truncated when they were not read."""
    conv = example_conversation("long_technical_support")
    assert len(conv.turns) >= 300
    last = len(conv.turns) - 1
    model = ScriptedModel(
        [
            reply(
                tool_call("record_follow_up", {"value": FOLLOW_UP, "evidence_turns": [last - 5]})
            ),
            reply(text("Recorded.")),
        ]
    )
    result = run(small_window(builtin_analyzer("follow_ups")), conv, model)

    block = conversation_block(model)
    assert "[0] " in block
    assert "[3] " in block
    assert f"[{last}] " in block
    assert "[150] " not in block
    assert "are not shown here" in block
    assert "get_turns" in block
    assert model.token_counts, "near the limit the model's own token count decides"
    assert result.status == "succeeded"
    assert result.truncated is True


def test_reading_every_hidden_turn_through_tools_is_not_truncated() -> None:
    """When the agent reads every left-out turn with get_turns, the result is not truncated."""
    conv = example_conversation("long_technical_support")
    first = reply(text("placeholder"))
    model = ScriptedModel([first])  # replaced below once the window is known
    run(small_window(builtin_analyzer("follow_ups")), conv, model)  # learn the window
    block = conversation_block(model)
    hidden = [i for i in range(len(conv.turns)) if f"\n[{i}] " not in "\n" + block]
    assert hidden, "the window must hide some turns"

    reads = [
        reply(tool_call("get_turns", {"first": start, "last": min(start + 79, hidden[-1])}))
        for start in range(hidden[0], hidden[-1] + 1, 80)
    ]
    model = ScriptedModel(
        [
            *reads,
            reply(tool_call("record_follow_up", {"value": FOLLOW_UP, "evidence_turns": [300]})),
            reply(text("Recorded.")),
        ]
    )
    result = run(small_window(builtin_analyzer("follow_ups")), conv, model)

    assert result.status == "succeeded", result.error
    assert result.truncated is False


def test_a_conversation_that_fits_is_shown_whole_without_counting() -> None:
    """Under the limit the whole conversation is shown and no token count is requested."""
    conv = example_conversation("long_technical_support")
    model = ScriptedModel([reply(text("Nothing to record."))])
    result = run(builtin_analyzer("follow_ups"), conv, model)

    block = conversation_block(model)
    assert all(f"[{i}] " in block for i in (0, 150, len(conv.turns) - 1))
    assert model.token_counts == []
    assert result.truncated is False
