"""Hypothesis over the pure cores: random procedures against random event logs (adherence) and
random successful event logs (capture). No exception, no hang, statuses consistent with the log,
and a procedure captured from a conversation is followed by that same conversation."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzers.procedures.adherence import check_adherence
from analyzers.procedures.capture import candidate_procedure, capture_steps
from analyzers.procedures.tool_calls import TOOL_CALL_EVENTS
from schemas import Conversation, Procedure
from schemas.conversation import Event
from schemas.outputs import Adherence, StepVerdict

# CI runs a modest number (the suite's time budget); run locally with more to hunt.
FUZZ = settings(
    max_examples=30 if os.environ.get("CI") else 100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TOOLS = ["lookup", "create", "notify", "verify"]
PARAMS = ["name", "email", "ref"]
LEAF = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["A", "B", "TechCorp", ""])
JSONISH = st.recursive(
    LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(PARAMS), inner),
    max_leaves=6,
)
STATUSES = [
    "done",
    "done_out_of_order",
    "wrong_parameters",
    "skipped",
    "skipped_condition_false",
    "not_verifiable",
]
VIOLATIONS = {"done_out_of_order", "wrong_parameters"}


@st.composite
def templates(draw: st.DrawFn, earlier: list[str]) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(PARAMS), max_size=3, unique=True))
    choices = [f"{{{{{p}}}}}" for p in PARAMS] + ["A", "x-{{ref}}", 1, True]
    choices += [f"{{{{{name}.result.name}}}}" for name in earlier]
    return {key: draw(st.sampled_from(choices)) for key in keys}


@st.composite
def procedures(draw: st.DrawFn) -> Procedure:
    steps: list[dict[str, Any]] = []
    results: list[str] = []
    previous_if = True  # an `if` cannot come first
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["tool", "tool", "instruction", "if"]))
        if kind == "if" and not previous_if:
            condition = draw(
                st.sampled_from(
                    [
                        *(f"{r}.result == null" for r in results),
                        *(f"{r}.result.name == 'A'" for r in results),
                        "true",
                        "nosuch.result == 1",
                    ]
                )
                | st.just({"natural_language": "the customer agreed"})
            )
            nested = []
            for _ in range(draw(st.integers(1, 2))):
                tool = draw(st.sampled_from(TOOLS))
                name = f"{tool}_{len(results)}"
                nested.append({"tool": tool, "id": name, "arguments": draw(templates(results))})
                results.append(name)
            condition_field = (
                condition if isinstance(condition, dict) else {"expression": condition}
            )
            steps.append({"if": condition_field, "steps": nested})
            previous_if = True
            continue
        previous_if = False
        if kind in {"instruction", "if"}:
            steps.append({"instruction": "Say something.", "optional": draw(st.booleans())})
            continue
        tool = draw(st.sampled_from(TOOLS))
        name = f"{tool}_{len(results)}"
        arguments = draw(templates(results))
        optional = draw(st.booleans())
        steps.append({"tool": tool, "id": name, "arguments": arguments, "optional": optional})
        results.append(name)
    return Procedure.model_validate(
        {
            "name": "fuzzed",
            "trigger": {"description": "Always."},
            "parameters": [{"name": p} for p in PARAMS],
            "steps": steps,
        }
    )


EVENTS = st.lists(
    st.builds(
        lambda kind, tool, arguments, result, ok: Event.model_validate(
            {"type": kind, "name": tool, "arguments": arguments, "result": result, "succeeded": ok}
        ),
        st.sampled_from(["tool_call", "tool_call", "transfer", "tool_use"]),
        st.sampled_from(TOOLS) | st.none(),
        st.dictionaries(st.sampled_from(PARAMS), JSONISH, max_size=3) | st.none(),
        JSONISH | st.fixed_dictionaries({"name": LEAF}),
        st.none() | st.booleans(),
    ),
    max_size=10,
)
JUDGED = st.lists(
    st.builds(
        StepVerdict,
        step=st.sampled_from(["1", "2", "3", "2.1", "3.1", "4.2", "9"]),
        kind=st.sampled_from(["instruction", "tool", "if"]),
        status=st.sampled_from(STATUSES),
    ),
    max_size=6,
)


@FUZZ
@given(procedure=procedures(), events=EVENTS, judged=JUDGED)
def test_any_procedure_against_any_event_log_is_consistent(
    procedure: Procedure, events: list[Event], judged: list[StepVerdict]
) -> None:
    report = check_adherence(procedure, events, judged=judged)
    assert report == check_adherence(procedure, events, judged=judged)  # deterministic
    expected = []
    for position, step in enumerate(procedure.steps or [], start=1):
        expected.append(str(position))
        if hasattr(step, "steps"):
            expected += [f"{position}.{inner}" for inner in range(1, len(step.steps) + 1)]
    assert [o.step for o in report.steps] == expected
    used = [o.event_index for o in report.steps if o.kind == "tool" and o.event_index is not None]
    assert len(used) == len(set(used))  # one call serves one step
    for outcome in report.steps:
        if outcome.kind == "tool" and outcome.event_index is not None:
            event = events[outcome.event_index]
            assert event.type in TOOL_CALL_EVENTS
        if outcome.kind == "tool" and outcome.status in ("done", "done_out_of_order"):
            assert outcome.event_index is not None
        if outcome.kind == "tool":
            assert outcome.decided_by == "event_log"
        if outcome.kind == "instruction" and outcome.decided_by == "model":
            assert outcome.status in {"done", "done_out_of_order", "skipped", "not_verifiable"}
    by_number = {o.step: o for o in report.steps}
    for outcome in report.steps:
        if outcome.kind == "if" and outcome.status in ("skipped", "skipped_condition_false"):
            nested = [o for o in report.steps if o.step.startswith(f"{outcome.step}.")]
            assert all(o.status == "skipped_condition_false" for o in nested)
            assert (outcome.status == "skipped") == any(o.event_index is not None for o in nested)
    assert 0.0 <= report.score <= 1.0
    deviated = any(
        o.status in VIOLATIONS or (o.status == "skipped" and not o.optional)
        for o in by_number.values()
    )
    assert (report.verdict == "deviated") == deviated
    assert report.verdict != "not_applicable"
    Adherence.model_validate(report.output_value())


CALLS = st.lists(
    st.tuples(
        st.sampled_from([*TOOLS, "lookup_2", "t" * 70]),
        st.dictionaries(st.sampled_from(PARAMS), JSONISH, max_size=3),
        JSONISH | st.fixed_dictionaries({"name": LEAF, "id": st.sampled_from(["V-1", "V-22"])}),
    ),
    max_size=8,
)


@FUZZ
@given(calls=CALLS, said=st.sampled_from(["", "I am TechCorp, ref A", "B"]))
def test_a_captured_procedure_is_followed_by_its_own_conversation(
    calls: list[tuple[str, dict[str, Any], Any]], said: str
) -> None:
    conversation = Conversation.model_validate(
        {
            "conversation_id": "fuzz",
            "outcome": "completed",
            "turns": [{"role": "user", "text": said}, {"role": "agent", "text": "Done."}],
            "events": [
                {"type": "tool_call", "name": tool, "arguments": arguments, "result": result}
                for tool, arguments, result in calls
            ],
        }
    )
    captured = capture_steps(conversation)
    if captured is None:
        return
    procedure = candidate_procedure(
        captured, conversation, name="fuzzed", trigger_description="Always."
    )
    assert procedure.approved is False
    report = check_adherence(procedure, conversation.events)
    tool_statuses = {o.status for o in report.steps if o.kind in ("tool", "if")}
    assert tool_statuses <= {"done"}, report
    assert report.verdict == "followed"
