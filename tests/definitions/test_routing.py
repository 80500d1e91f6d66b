"""Sink routing: a sink's `when` against a result, on empty, present and failed results."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzers.definitions.routing import RoutingError, routing_matches
from analyzers.testing import ScriptedModel, reply, text, tool_call
from schemas import AnalysisResult
from schemas.analyzer import JsonlSink, SlackSink
from schemas.result import RecordedOutput, RunError
from tests.analyzers.helpers import builtin_analyzer, conversation, run

NEXT_STEP = {
    "action": "Call the customer back about the refund.",
    "owner": "billing",
    "due": "today",
    "reason": "The agent promised a callback.",
}


def sink(when: str | None) -> SlackSink:
    return SlackSink(type="slack", channel="#ops", when=when)


def result_with(
    outputs: dict[str, list[RecordedOutput]], *, failed: bool = False
) -> AnalysisResult:
    return AnalysisResult(
        run_id="r-1",
        conversation_id="c-1",
        analyzer="next_steps",
        analyzer_version="1",
        status="failed" if failed else "succeeded",
        outputs=outputs,
        error=RunError(type="turn_limit", message="out of turns") if failed else None,
    )


def builtin_when(name: str) -> SlackSink:
    """The built-in's first Slack route (follow_ups: the escalations channel)."""
    route = builtin_analyzer(name).sinks[0]
    assert isinstance(route, SlackSink)
    return route


def test_an_empty_output_does_not_route_and_does_not_raise() -> None:
    """The runtime's own result for a run that found nothing: `size(...) > 0` is false."""
    model = ScriptedModel([reply(text("Nothing to do."))])
    result = run(builtin_analyzer("next_steps"), conversation(), model)

    assert result.outputs == {"next_step": []}
    assert routing_matches(builtin_when("next_steps"), result) is False


def test_a_present_output_routes() -> None:
    model = ScriptedModel(
        [
            reply(tool_call("record_next_step", {"value": NEXT_STEP, "evidence_turns": [1]})),
            reply(text("Recorded one.")),
        ]
    )
    result = run(builtin_analyzer("next_steps"), conversation(), model)

    assert routing_matches(builtin_when("next_steps"), result) is True
    assert routing_matches(sink('outputs.next_step[0].value.owner == "billing"'), result)


def test_a_failed_result_routes_on_what_it_recorded_and_on_its_status() -> None:
    recorded = [RecordedOutput(value=NEXT_STEP, evidence_turns=[1])]
    failed = result_with({"next_step": recorded}, failed=True)
    empty_failure = result_with({"next_step": []}, failed=True)

    assert routing_matches(sink("size(outputs.next_step) > 0"), failed) is True
    assert routing_matches(sink("size(outputs.next_step) > 0"), empty_failure) is False
    assert routing_matches(sink('status == "failed" && error.type == "turn_limit"'), failed)
    assert routing_matches(sink('status == "succeeded"'), failed) is False


def test_follow_up_routing_skips_unknown_items_instead_of_failing_on_them() -> None:
    urgent = RecordedOutput(value={"priority": "urgent"}, evidence_turns=[0])
    unknown = RecordedOutput(unknown=True, unknown_reason="cannot tell")
    route = builtin_when("follow_ups")

    assert routing_matches(route, result_with({"follow_up": [unknown]})) is False
    assert routing_matches(route, result_with({"follow_up": [unknown, urgent]})) is True
    assert routing_matches(route, result_with({"follow_up": []})) is False


def test_no_when_always_routes() -> None:
    assert routing_matches(JsonlSink(type="jsonl", path="out.jsonl"), result_with({})) is True


def test_a_condition_that_cannot_be_evaluated_is_an_error_naming_it() -> None:
    """Indexing an empty output is a broken rule: reported, never a silent false."""
    with pytest.raises(RoutingError, match=r"slack sink: .*outputs\.next_step\[0\]"):
        routing_matches(
            sink("outputs.next_step[0].value.owner == 'x'"), result_with({"next_step": []})
        )


def test_the_conversation_is_readable_when_given() -> None:
    conv = conversation(turns=4)
    route = sink('conversation.outcome == "escalated" && conversation.turn_count == 4')
    assert routing_matches(route, result_with({}), conv) is True


RECORDED = st.builds(
    RecordedOutput,
    value=st.none()
    | st.integers()
    | st.text(max_size=8)
    | st.fixed_dictionaries({"priority": st.sampled_from(["urgent", "high", "normal"])}),
    evidence_turns=st.lists(st.integers(0, 50), max_size=3),
)
CONDITIONS = st.sampled_from(
    [
        "size(outputs.next_step) > 0",
        "outputs.next_step.exists(s, s.value == 1)",
        "outputs.next_step[0].value == 'x'",
        'status == "succeeded"',
        "cost.input_usd > 1.0",
        "truncated",
        "1 + ",
        "outputs.next_step",
    ]
) | st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(when=CONDITIONS, recorded=st.lists(RECORDED, max_size=4), failed=st.booleans())
def test_any_condition_on_any_result_answers_or_raises_a_routing_error(
    when: str, recorded: list[RecordedOutput], failed: bool
) -> None:
    result = result_with({"next_step": recorded}, failed=failed)
    try:
        route = sink(when)
    except ValueError:
        return  # an empty or invalid `when` is refused where the sink is defined
    verdict: Any
    try:
        verdict = routing_matches(route, result)
    except RoutingError as error:
        verdict = str(error)
    assert isinstance(verdict, bool) or verdict.startswith("slack sink: ")
