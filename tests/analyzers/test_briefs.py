"""What each built-in is told: reading before recording, the division between next_steps and
follow_ups, owners outside the list, and the procedures quality scores against."""

from __future__ import annotations

from analyzers.testing import ScriptedModel, reply, text, tool_call
from tests.analyzers.helpers import (
    builtin_analyzer,
    conversation,
    example_conversation,
    example_definitions,
    run,
)

NEXT_STEP = {
    "action": "Send the signed contract to the customer.",
    "owner": "other",
    "team": "legal",
    "due": "this_week",
    "reason": "The customer asked for the contract in writing.",
}


def first_message(model: ScriptedModel) -> str:
    return "\n".join(block["text"] for block in model.requests[0].messages[0]["content"])


def test_the_first_message_asks_to_read_before_recording() -> None:
    model = ScriptedModel([reply(text("Nothing."))])
    run(builtin_analyzer("next_steps"), conversation(), model)

    message = first_message(model)
    reading = message.index("Start by reading the whole conversation")
    assert message.index("Only then record your outputs", reading) > reading
    assert "Now record your outputs" not in message


def test_next_steps_and_follow_ups_each_say_what_belongs_to_the_other() -> None:
    next_steps = " ".join(builtin_analyzer("next_steps").instructions.split())
    follow_ups = " ".join(builtin_analyzer("follow_ups").instructions.split())
    assert "recorded by the separate follow_ups review; do not record it here" in next_steps
    assert "recorded by the separate next_steps review; do not record it here" in follow_ups


def test_an_owner_outside_the_list_is_other_with_a_named_team() -> None:
    nameless = {**NEXT_STEP, "team": " "}
    model = ScriptedModel(
        [
            reply(
                tool_call(
                    "record_output",
                    {"output": "next_step", "value": nameless, "evidence_turns": [1]},
                )
            ),
            reply(
                tool_call(
                    "record_output",
                    {"output": "next_step", "value": NEXT_STEP, "evidence_turns": [1]},
                )
            ),
            reply(text("Recorded.")),
        ]
    )
    result = run(builtin_analyzer("next_steps"), conversation(), model)

    refusal = model.requests[1].messages[-1]["content"][0]["content"]
    assert "value: team: name the team when owner is other" in refusal
    assert [recorded.value for recorded in result.outputs["next_step"]] == [NEXT_STEP]
    assert '"other"' in first_message(model), "the schema in the brief offers other"


def test_the_same_item_is_not_recorded_twice() -> None:
    """A second call with the same item (up to case and spacing) is refused, naming the first."""
    again = {**NEXT_STEP, "action": "send the signed  CONTRACT to the customer."}
    other = {**NEXT_STEP, "action": "Update the billing address."}
    model = ScriptedModel(
        [
            reply(tool_call("record_next_step", {"value": NEXT_STEP, "evidence_turns": [1]})),
            reply(tool_call("record_next_step", {"value": again, "evidence_turns": [3]})),
            reply(tool_call("record_next_step", {"value": other, "evidence_turns": [3]})),
            reply(text("Recorded.")),
        ]
    )
    result = run(builtin_analyzer("next_steps"), conversation(), model)

    refusal = model.requests[2].messages[-1]["content"][0]
    assert refusal["is_error"] is True
    assert "same item as next_step number 1" in refusal["content"]
    assert [r.value["action"] for r in result.outputs["next_step"]] == [
        NEXT_STEP["action"],
        other["action"],
    ]
    assert result.status == "succeeded"


def test_quality_sees_the_agents_procedures_as_a_standard_not_as_orders() -> None:
    _, procedures = example_definitions()
    conv = example_conversation("vendor_onboarding")
    model = ScriptedModel([reply(text("."))] * 3)
    run(builtin_analyzer("quality"), conv, model, procedures=procedures)

    message = first_message(model)
    assert "## The agent's procedures for this conversation" in message
    assert '<procedure name="vendor_onboarding" version="1">' in message
    assert "do not carry them out" in message
    assert "refund_policy" not in message, "not named in the event log, trigger does not match"


def test_analyzers_that_do_not_review_see_no_agent_procedures() -> None:
    _, procedures = example_definitions()
    conv = example_conversation("vendor_onboarding")
    model = ScriptedModel([reply(text("."))])
    run(builtin_analyzer("next_steps"), conv, model, procedures=procedures)
    assert "The agent's procedures" not in first_message(model)
