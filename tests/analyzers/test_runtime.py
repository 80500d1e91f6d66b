"""The run loop: outputs, validation feedback, reminders, every stop reason, limits, faults."""

from __future__ import annotations

import pytest

from analyzers.errors import PermanentModelError, TransientModelError
from analyzers.model.profiles import cost_of
from analyzers.runtime.session import RunOptions
from analyzers.testing import ScriptedModel, reply, text, thinking, tool_call
from schemas import AnalyzerSpec, Usage
from tests.analyzers.helpers import builtin_analyzer, conversation, run

FOLLOW_UP = {
    "priority": "urgent",
    "reason": "Business customer without internet for two days.",
    "suggested_action": "Dispatch a technician today.",
}
QUALITY = {
    "resolution": "partially_resolved",
    "success": "unknown",
    "rationale": "The fault was escalated; the outcome is not in the conversation.",
    "customer_sentiment": "negative",
    "sentiment_trend": "stable",
    "scores": {"accuracy": 4, "empathy": 3, "efficiency": 3, "policy_adherence": 4},
}


def with_model(spec: AnalyzerSpec, **changes: object) -> AnalyzerSpec:
    """The analyzer with some model settings changed."""
    return spec.model_copy(update={"model": spec.model.model_copy(update=changes)})


def test_records_outputs_and_traces_every_tool_call() -> None:
    """A run that reads, records and ends succeeds with its outputs and a full trace."""
    model = ScriptedModel(
        [
            reply(thinking("Read the start."), tool_call("get_turns", {"first": 0, "last": 2})),
            reply(tool_call("record_follow_up", {"value": FOLLOW_UP, "evidence_turns": [1, 3]})),
            reply(text("One follow-up recorded.")),
        ]
    )
    result = run(builtin_analyzer("follow_ups"), conversation(), model)

    assert result.status == "succeeded", result.error
    assert [o.value for o in result.outputs["follow_up"]] == [FOLLOW_UP]
    assert result.outputs["follow_up"][0].evidence_turns == [1, 3]
    assert [(t.tool_name, t.kind, t.succeeded) for t in result.trace] == [
        ("get_turns", "builtin", True),
        ("record_follow_up", "output", True),
    ]
    assert result.model_turns == 3
    assert result.usage == Usage(input_tokens=300, output_tokens=60)
    assert result.provenance is not None
    assert result.provenance.prompt_hash
    assert not result.truncated


def test_thinking_blocks_are_sent_back_exactly_as_received() -> None:
    """Inside the tool loop the assistant content, thinking and signature included, is echoed
    unchanged, followed by one user message holding the tool results."""
    first = reply(
        thinking("Private reasoning.", signature="EqQBsig=="),
        {"type": "redacted_thinking", "data": "opaque=="},
        tool_call("get_turns", {"first": 0, "last": 1}, "toolu_A"),
    )
    model = ScriptedModel([first, reply(text("Nothing to record."))])
    run(builtin_analyzer("follow_ups"), conversation(), model)

    second = model.requests[1].messages
    assert second[-2] == {"role": "assistant", "content": first.content}
    results = second[-1]["content"]
    assert [block["type"] for block in results] == ["tool_result"]
    assert results[0]["tool_use_id"] == "toolu_A"


def test_tool_choice_is_never_forced_and_tools_are_sorted() -> None:
    """Requests carry a stable, sorted tool list and rely on the model choosing tools."""
    model = ScriptedModel([reply(text("Nothing to record."))])
    run(builtin_analyzer("follow_ups"), conversation(), model)

    names = [tool["name"] for tool in model.requests[0].tools]
    assert names == sorted(names)
    assert names == ["get_turns", "record_output", "search_conversation"]
    assert not hasattr(model.requests[0], "tool_choice")


def test_invalid_output_goes_back_to_the_model_naming_each_problem() -> None:
    """Input that breaks the output schema is not recorded; the model gets an error tool_result
    listing the problems, and its corrected call is recorded."""
    bad = {"value": {**FOLLOW_UP, "priority": "sky-high"}, "evidence_turns": [2, 99]}
    model = ScriptedModel(
        [
            reply(tool_call("record_follow_up", bad, "toolu_bad")),
            reply(tool_call("record_follow_up", {"value": FOLLOW_UP, "evidence_turns": [2]})),
            reply(text("Done.")),
        ]
    )
    result = run(builtin_analyzer("follow_ups"), conversation(), model)

    feedback = model.requests[1].messages[-1]["content"][0]
    assert feedback["is_error"] is True
    assert "value.priority: 'sky-high' is not one of" in feedback["content"]
    assert "evidence_turns: [99] are not turn numbers" in feedback["content"]
    assert result.status == "succeeded"
    assert len(result.outputs["follow_up"]) == 1
    assert [t.succeeded for t in result.trace] == [False, True]


def test_invalid_outputs_beyond_the_budget_fail_the_run() -> None:
    """When the model keeps sending invalid input past max_output_retries, the run fails."""
    bad = {"value": {"priority": "nope"}, "evidence_turns": []}
    spec = with_model(builtin_analyzer("follow_ups"), max_output_retries=1)
    model = ScriptedModel(
        [
            reply(tool_call("record_follow_up", bad)),
            reply(tool_call("record_follow_up", bad)),
        ]
    )
    result = run(spec, conversation(), model)

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "invalid_outputs"
    assert result.outputs == {"follow_up": []}, "declared, nothing valid recorded"


def test_every_declared_output_is_present_even_when_nothing_was_recorded() -> None:
    """A routing condition reads `outputs.x` without first asking whether it exists."""
    result = run(builtin_analyzer("follow_ups"), conversation(), ScriptedModel([reply(text("."))]))
    assert result.status == "succeeded"
    assert result.outputs == {"follow_up": []}


def test_a_failed_run_keeps_what_it_recorded_before_failing() -> None:
    """The outputs recorded before a failure are delivered with the failure, not dropped."""
    spec = with_model(builtin_analyzer("follow_ups"), max_turns=2)
    model = ScriptedModel(
        [
            reply(tool_call("record_follow_up", {"value": FOLLOW_UP, "evidence_turns": [1]})),
            reply(tool_call("get_turns", {"first": 0, "last": 0})),
        ]
    )
    result = run(spec, conversation(), model)

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "turn_limit"
    assert [recorded.value for recorded in result.outputs["follow_up"]] == [FOLLOW_UP]


def test_evidence_can_cite_events_and_is_checked_like_turns() -> None:
    """Proof of a refund lives in an event: outputs cite events by number, and a number the
    conversation does not have goes back to the model naming the field."""
    refund = {"type": "tool_call", "name": "refund_issue", "succeeded": True, "turn_index": 2}
    conv = conversation(events=[refund])
    model = ScriptedModel(
        [
            reply(
                tool_call(
                    "record_follow_up",
                    {"value": FOLLOW_UP, "evidence_turns": [2], "evidence_events": [0, 4]},
                )
            ),
            reply(
                tool_call(
                    "record_follow_up",
                    {"value": FOLLOW_UP, "evidence_turns": [2], "evidence_events": [0]},
                )
            ),
            reply(text("Recorded.")),
        ]
    )
    result = run(builtin_analyzer("follow_ups"), conv, model)

    feedback = model.requests[1].messages[-1]["content"][0]
    assert feedback["is_error"] is True
    assert (
        "evidence_events: [4] are not event numbers of this conversation (0 to 0)"
        in (feedback["content"])
    )
    (recorded,) = result.outputs["follow_up"]
    assert recorded.evidence_events == [0]
    assert recorded.evidence_turns == [2]


def test_missing_required_output_is_asked_for_again() -> None:
    """A turn that ends without a required output gets a reminder naming it."""
    model = ScriptedModel(
        [
            reply(text("The agent did fine.")),
            reply(
                tool_call("record_quality_assessment", {"value": QUALITY, "evidence_turns": [0]})
            ),
            reply(text("Recorded.")),
        ]
    )
    result = run(builtin_analyzer("quality"), conversation(), model)

    reminder = model.requests[1].messages[-1]["content"][0]["text"]
    assert "record_quality_assessment" in reminder
    assert result.status == "succeeded"
    assert result.outputs["quality_assessment"][0].value == QUALITY


def test_missing_required_output_after_every_reminder_fails_the_run() -> None:
    """After max_nudges reminders without the output, the run fails and says which output."""
    spec = with_model(builtin_analyzer("quality"), max_nudges=2)
    model = ScriptedModel([reply(text("No.")), reply(text("Still no.")), reply(text("No."))])
    result = run(spec, conversation(), model)

    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "missing_outputs"
    assert "quality_assessment" in result.error.message
    assert len(model.requests) == 3


def test_unknown_is_a_first_class_answer() -> None:
    """An output recorded as unknown, with its reason, satisfies a required output."""
    arguments = {"unknown": True, "unknown_reason": "Call cut after 2 turns.", "evidence_turns": []}
    model = ScriptedModel(
        [
            reply(tool_call("record_quality_assessment", arguments)),
            reply(text("Recorded as unknown.")),
        ]
    )
    result = run(builtin_analyzer("quality"), conversation(turns=2), model)

    assert result.status == "succeeded"
    recorded = result.outputs["quality_assessment"][0]
    assert recorded.unknown
    assert recorded.value is None
    assert recorded.unknown_reason == "Call cut after 2 turns."


def test_unknown_without_a_reason_is_sent_back() -> None:
    """Unknown must say why; otherwise the model is asked to fix it."""
    model = ScriptedModel(
        [
            reply(tool_call("record_quality_assessment", {"unknown": True, "evidence_turns": []})),
            reply(
                tool_call("record_quality_assessment", {"value": QUALITY, "evidence_turns": [1]})
            ),
            reply(text("Done.")),
        ]
    )
    result = run(builtin_analyzer("quality"), conversation(), model)

    feedback = model.requests[1].messages[-1]["content"][0]
    assert feedback["is_error"]
    assert "unknown_reason" in feedback["content"]
    assert result.status == "succeeded"


def test_pause_turn_is_resent_unchanged() -> None:
    """A paused turn is sent back as is, with no new user text, and the run continues."""
    paused = reply(thinking("Long work..."), stop_reason="pause_turn")
    model = ScriptedModel([paused, reply(text("Nothing to record."))])
    result = run(builtin_analyzer("follow_ups"), conversation(), model)

    assert result.status == "succeeded"
    assert model.requests[1].messages[-1] == {"role": "assistant", "content": paused.content}


def test_max_tokens_never_runs_the_cut_off_tool_call() -> None:
    """In a turn cut at max_tokens, complete tool calls run and the last one does not."""
    cut = reply(
        tool_call("get_turns", {"first": 0, "last": 1}, "toolu_ok"),
        tool_call("record_follow_up", {"value": {"priority": "urg"}}, "toolu_cut"),
        stop_reason="max_tokens",
    )
    model = ScriptedModel(
        [
            cut,
            reply(tool_call("record_follow_up", {"value": FOLLOW_UP, "evidence_turns": [1]})),
            reply(text("Done.")),
        ]
    )
    result = run(builtin_analyzer("follow_ups"), conversation(), model)

    results = model.requests[1].messages[-1]["content"]
    assert [(r["tool_use_id"], r.get("is_error", False)) for r in results] == [
        ("toolu_ok", False),
        ("toolu_cut", True),
    ]
    assert "cut off" in results[1]["content"]
    assert [t.tool_name for t in result.trace] == ["get_turns", "record_follow_up"]
    assert result.status == "succeeded"


def test_max_tokens_without_tool_calls_asks_to_continue() -> None:
    """A text answer cut at max_tokens is continued with a short request."""
    model = ScriptedModel(
        [
            reply(text("The customer said"), stop_reason="max_tokens"),
            reply(text("Nothing to record.")),
        ]
    )
    result = run(builtin_analyzer("follow_ups"), conversation(), model)

    assert "cut off" in model.requests[1].messages[-1]["content"][0]["text"]
    assert result.status == "succeeded"


def test_repeated_max_tokens_fails_with_the_setting_to_change() -> None:
    """Cut off again and again, the run fails and names model.max_tokens."""
    model = ScriptedModel([reply(text("..."), stop_reason="max_tokens")] * 3)
    result = run(builtin_analyzer("follow_ups"), conversation(), model)

    assert result.error is not None
    assert result.error.type == "max_tokens"
    assert "model.max_tokens" in result.error.message


def test_refusal_fails_the_run_with_its_category() -> None:
    """A refusal ends the run, keeping the category and explanation."""
    refused = reply(
        stop_reason="refusal",
        stop_details={"type": "refusal", "category": "cyber", "explanation": "Not allowed."},
    )
    result = run(builtin_analyzer("follow_ups"), conversation(), ScriptedModel([refused]))

    assert result.error is not None
    assert result.error.type == "model_refused"
    assert "cyber" in result.error.message
    assert "Not allowed." in result.error.message


def test_stop_sequence_ends_the_turn() -> None:
    """A stop sequence is treated like the end of the turn."""
    model = ScriptedModel([reply(text("Done"), stop_reason="stop_sequence")])
    assert run(builtin_analyzer("follow_ups"), conversation(), model).status == "succeeded"


def test_context_window_exceeded_retries_once_with_a_window() -> None:
    """When the model reports the context window exceeded, the run starts again reading a
    window of the conversation, and says honestly that it did not read it whole."""
    overflow = reply(stop_reason="model_context_window_exceeded")
    model = ScriptedModel([overflow, reply(text("Nothing to record."))])
    result = run(builtin_analyzer("follow_ups"), conversation(turns=60), model)

    assert result.status == "succeeded"
    assert result.model_turns == 2, "the overflowing attempt's turn is still counted"
    assert result.usage.input_tokens == 200, "and so are its tokens"
    first_block = model.requests[0].system[1]["text"]
    second_block = model.requests[1].system[1]["text"]
    assert "[30] " in first_block
    assert "[30] " not in second_block
    assert "are not shown here" in second_block
    assert result.truncated


def test_context_window_exceeded_twice_fails() -> None:
    """A second overflow, even windowed, fails the run with that reason."""
    overflow = reply(stop_reason="model_context_window_exceeded")
    result = run(
        builtin_analyzer("follow_ups"), conversation(turns=60), ScriptedModel([overflow] * 2)
    )
    assert result.error is not None
    assert result.error.type == "context_window_exceeded"


def test_context_window_exceeded_twice_counts_each_attempt_once() -> None:
    """Both overflowing attempts are billed, each exactly once (the second used to be added
    twice: once carried over, once as the result's own session)."""
    first = reply(
        stop_reason="model_context_window_exceeded",
        usage=Usage(input_tokens=1_000, output_tokens=0, cache_creation_input_tokens=300),
    )
    second = reply(
        stop_reason="model_context_window_exceeded",
        usage=Usage(input_tokens=10, output_tokens=0, cache_read_input_tokens=7),
    )
    result = run(
        builtin_analyzer("follow_ups"), conversation(turns=60), ScriptedModel([first, second])
    )
    assert result.status == "failed"
    assert result.model_turns == 2
    assert result.usage == Usage(
        input_tokens=1_010, cache_creation_input_tokens=300, cache_read_input_tokens=7
    )
    assert result.cost == cost_of(result.model or "", result.usage)


def test_turn_limit_fails_the_run() -> None:
    """A run that would need more model turns than max_turns fails with turn_limit."""
    spec = with_model(builtin_analyzer("follow_ups"), max_turns=2)
    loop = reply(tool_call("get_turns", {"first": 0, "last": 0}))
    result = run(spec, conversation(), ScriptedModel([loop, loop, loop]))
    assert result.error is not None
    assert result.error.type == "turn_limit"
    assert result.model_turns == 2


def test_deadline_fails_the_run() -> None:
    """A run past its deadline stops before the next model call."""
    ticks = iter([0.0, 0.0, 0.0, 5.0] + [1000.0] * 50)
    spec = with_model(builtin_analyzer("follow_ups"), timeout_seconds=60)
    loop = reply(tool_call("get_turns", {"first": 0, "last": 0}))
    options = RunOptions(monotonic=lambda: next(ticks))
    result = run(spec, conversation(), ScriptedModel([loop, loop, loop]), options=options)
    assert result.error is not None
    assert result.error.type == "deadline_exceeded"


def test_cost_limit_fails_the_run() -> None:
    """A run whose spend passes max_cost_usd stops and says how much it cost."""
    spec = with_model(builtin_analyzer("follow_ups"), max_cost_usd=0.01)
    expensive = reply(text("..."), usage=Usage(input_tokens=1_000_000, output_tokens=10))
    result = run(spec, conversation(), ScriptedModel([expensive]))
    assert result.error is not None
    assert result.error.type == "cost_limit"
    assert result.cost.total_usd > 0.01


def test_transient_model_errors_propagate_for_the_caller_to_retry() -> None:
    """Rate limits and overload are not failures of the run: the caller retries it."""
    model = ScriptedModel([TransientModelError("overloaded", retry_after=7.0)])
    with pytest.raises(TransientModelError) as raised:
        run(builtin_analyzer("follow_ups"), conversation(), model)
    assert raised.value.retry_after == 7.0


def test_permanent_model_errors_fail_the_run() -> None:
    """A request the model will never accept fails the run with the API's message."""
    model = ScriptedModel([PermanentModelError("invalid_request_error: bad model")])
    result = run(builtin_analyzer("follow_ups"), conversation(), model)
    assert result.error is not None
    assert result.error.type == "model_error"
    assert "bad model" in result.error.message


def test_companions_share_the_prompt_prefix_but_not_their_tools() -> None:
    """Analyzers of one conversation send identical tools and system blocks (one cached
    prefix), yet each may only record its own outputs."""
    follow_ups, quality = builtin_analyzer("follow_ups"), builtin_analyzer("quality")
    conv = conversation()
    first = ScriptedModel(
        [
            reply(
                tool_call("record_quality_assessment", {"value": QUALITY, "evidence_turns": [1]})
            ),
            reply(text("Done.")),
        ]
    )
    result = run(follow_ups, conv, first, companions=[quality])
    second = ScriptedModel(
        [
            reply(
                tool_call("record_quality_assessment", {"value": QUALITY, "evidence_turns": [1]})
            ),
            reply(text("Done.")),
        ]
    )
    run(quality, conv, second, companions=[follow_ups])

    assert first.requests[0].tools == second.requests[0].tools
    assert first.requests[0].system == second.requests[0].system
    offered = [tool["name"] for tool in first.requests[0].tools]
    assert "record_quality_assessment" not in offered, "a companion's output is not offered"
    refused = first.requests[1].messages[-1]["content"][0]
    assert refused["is_error"]
    assert "not available to this analyzer" in refused["content"]
    assert result.outputs == {"follow_up": []}


def test_the_three_builtins_are_offered_the_same_tools_and_only_their_own() -> None:
    """One shared tool list (the start of the cached prefix), holding nothing an analyzer may
    not call: the outputs are told apart by record_output's `output`."""
    requests = []
    for name in ("next_steps", "follow_ups", "quality"):
        model = ScriptedModel([reply(text("."))] * 3)
        run(builtin_analyzer(name), conversation(), model)
        requests.append(model.requests[0])
    assert requests[0].tools == requests[1].tools == requests[2].tools
    assert requests[0].system == requests[1].system == requests[2].system
    assert {tool["name"] for tool in requests[0].tools} <= set(
        builtin_analyzer("quality").tool_names()
    ) | {"record_output"}


def test_record_output_refuses_an_output_that_is_not_the_analyzers() -> None:
    model = ScriptedModel(
        [
            reply(
                tool_call(
                    "record_output",
                    {"output": "quality_assessment", "value": QUALITY, "evidence_turns": [1]},
                )
            ),
            reply(
                tool_call(
                    "record_output",
                    {"output": "follow_up", "value": FOLLOW_UP, "evidence_turns": [1]},
                )
            ),
            reply(text("Done.")),
        ]
    )
    result = run(builtin_analyzer("follow_ups"), conversation(), model)

    refusal = model.requests[1].messages[-1]["content"][0]
    assert refusal["is_error"] is True
    assert (
        "output must name one of your outputs (follow_up), not 'quality_assessment'"
        in (refusal["content"])
    )
    assert [recorded.value for recorded in result.outputs["follow_up"]] == [FOLLOW_UP]
    assert [call.kind for call in result.trace] == ["output", "output"]


def test_conversation_block_carries_the_cache_breakpoint() -> None:
    """The conversation is the last system block and the one with the cache breakpoint; the
    newest message carries a moving breakpoint."""
    model = ScriptedModel([reply(text("Nothing."))])
    run(builtin_analyzer("follow_ups"), conversation(), model)
    system = model.requests[0].system
    assert "cache_control" not in system[0]
    assert system[1]["cache_control"] == {"type": "ephemeral"}
    assert "<transcript" in system[1]["text"]
    assert model.requests[0].messages[-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
