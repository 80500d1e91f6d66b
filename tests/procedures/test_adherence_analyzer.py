"""The built-in `procedure_adherence` end to end through `analyzers.run`, with a scripted model
that judges only instruction steps: the event log decides every tool step and condition, and
what the model says about them is discarded."""

from __future__ import annotations

import asyncio
from typing import Any

import analyzers
from analyzers.fakes import FakeMessagesAPI, serve_fake_messages_api
from analyzers.fakes.simulated import simulated_analyst
from analyzers.model.anthropic import build_anthropic_model
from analyzers.procedures.adherence import check_adherence
from analyzers.runtime.adherence_support import agents_procedure
from analyzers.testing import ScriptedModel, reply, text, tool_call
from schemas import AnalysisResult, Conversation, Procedure
from tests.analyzers.helpers import builtin_analyzer, example_conversation, run
from tests.procedures.agent_procedures import TECHCORP, refund_with_identity, vendor_onboarding

SPEC = builtin_analyzer("procedure_adherence")


def vendor_conversation(
    *,
    found: bool,
    procedure_name: str | None = "vendor_onboarding",
    agent: str = "procurement-assistant",
) -> Conversation:
    traced = {"procedure_name": procedure_name} if procedure_name else {}
    lookup = {"vendorId": "V-0042", "status": "Active"} if found else None
    return Conversation.model_validate(
        {
            "conversation_id": "vendor-1",
            "tenant_id": "globex",
            "agent_id": agent,
            "outcome": "completed",
            "turns": [
                {"role": "user", "text": "Onboard the new vendor TechCorp"},
                {"role": "agent", "text": "Name, contact and contract reference, please?"},
                {"role": "user", "text": "TechCorp, procurement@techcorp.com, CTR-2025-001"},
                {"role": "agent", "text": "Created TechCorp as vendor V-9912."},
            ],
            "events": [
                {
                    "type": "tool_call",
                    "name": "vendor_lookup",
                    "arguments": {"name": "TechCorp"},
                    "result": lookup,
                    "succeeded": True,
                    "turn_index": 2,
                    "procedure_step_order": 2,
                    **traced,
                },
                {
                    "type": "tool_call",
                    "name": "vendor_create",
                    "arguments": TECHCORP,
                    "result": {"vendorId": "V-9912", "status": "Created"},
                    "succeeded": True,
                    "turn_index": 3,
                    "procedure_step_order": 3,
                    **traced,
                },
            ],
        }
    )


def record(steps: list[dict[str, Any]]) -> ScriptedModel:
    value = {"procedure": "made_up", "verdict": "followed", "score": 1.0, "steps": steps}
    return ScriptedModel(
        [
            reply(
                tool_call(
                    "record_output",
                    {"output": "adherence", "value": value, "evidence_turns": [0, 3]},
                )
            ),
            reply(text("Recorded.")),
        ]
    )


def steps_of(result: Any) -> dict[str, str]:
    value = result.outputs["adherence"][0].value
    return {s["step"]: s["status"] for s in value["steps"]}


def test_seed_vendor_found_but_created_anyway_reports_the_violation() -> None:
    model = record(
        [
            {"step": "1", "kind": "instruction", "status": "done", "evidence_turns": [1, 2]},
            # The model claims the tool steps went fine: it is not asked, and not believed.
            {"step": "3", "kind": "if", "status": "done"},
            {"step": "3.1", "kind": "tool", "status": "done"},
            {
                "step": "4",
                "kind": "instruction",
                "status": "skipped",
                "evidence_turns": [3],
                "note": "never said the vendor existed",
            },
        ]
    )
    result = run(SPEC, vendor_conversation(found=True), model, procedures=[vendor_onboarding()])
    assert result.status == "succeeded", result.error
    value = result.outputs["adherence"][0].value
    assert value["procedure"] == "vendor_onboarding"
    assert value["procedure_version"] == 2
    assert value["verdict"] == "deviated"
    assert steps_of(result) == {
        "1": "done",
        "2": "done",
        "3": "skipped",
        "3.1": "skipped_condition_false",
        "3.2": "skipped_condition_false",
        "4": "skipped",
    }
    created = next(s for s in value["steps"] if s["step"] == "3.1")
    assert created["event_index"] == 1
    assert "anyway" in created["note"]
    assert 0.0 <= value["score"] < 1.0
    # The model was told what was decided and asked only about the instruction steps.
    brief = str(model.requests[0].messages[0]["content"])
    assert "Judge only these steps, from the transcript: 1 (instruction), 4 (instruction)" in brief
    assert "step 3.1 (tool): skipped_condition_false" in brief


def test_followed_when_the_lookup_found_nothing() -> None:
    model = record(
        [
            {"step": "1", "kind": "instruction", "status": "done", "evidence_turns": [1]},
            {"step": "3.2", "kind": "instruction", "status": "done", "evidence_turns": [3]},
            {"step": "4", "kind": "instruction", "status": "not_verifiable"},
        ]
    )
    result = run(SPEC, vendor_conversation(found=False), model, procedures=[vendor_onboarding()])
    value = result.outputs["adherence"][0].value
    assert steps_of(result) == {
        "1": "done",
        "2": "done",
        "3": "done",
        "3.1": "done",
        "3.2": "done",
        "4": "not_verifiable",
    }
    assert value["verdict"] == "followed"
    assert value["score"] == 1.0
    assert result.outputs["adherence"][0].evidence_events == [0, 1]


def test_found_by_matching_when_the_event_log_names_no_procedure() -> None:
    conversation = vendor_conversation(found=True, procedure_name=None)
    procedure, how = agents_procedure(conversation, [vendor_onboarding()])
    assert procedure is not None
    assert "turn 0" in how
    assert "onboard * vendor" in how


def test_another_agents_or_unapproved_procedure_is_not_used_and_no_model_is_called() -> None:
    unshared = vendor_conversation(found=True, agent="someone-else")
    pending = vendor_onboarding(approved=False, created_by="learned")
    for conversation, procedures in [
        (unshared, [vendor_onboarding()]),
        (vendor_conversation(found=True), [pending]),
        (vendor_conversation(found=True), [vendor_onboarding(tenant_id="initech")]),
    ]:
        model = ScriptedModel([])
        result = run(SPEC, conversation, model, procedures=procedures)
        assert result.status == "succeeded"
        assert result.outputs["adherence"][0].value["verdict"] == "not_applicable"
        assert model.requests == []


def test_only_tool_steps_means_no_model_call() -> None:
    procedure = Procedure.model_validate(
        {
            **refund_with_identity().model_dump(by_alias=True),
            "steps": [
                {"tool": "verify_identity", "arguments": {"customer_id": "{{customer_id}}"}},
                {"tool": "issue_refund", "arguments": {"order_id": "{{order_id}}"}},
            ],
            "tenant_id": None,
        }
    )
    logged = vendor_conversation(found=False, procedure_name=None).model_dump(mode="json")
    logged["events"] = [
        {
            "type": "tool_call",
            "name": "issue_refund",
            "arguments": {"order_id": "A-1"},
            "procedure_name": "refund_with_identity",
        },
    ]
    conversation = Conversation.model_validate(logged)
    model = ScriptedModel([])
    result = run(SPEC, conversation, model, procedures=[procedure])
    assert model.requests == []
    assert steps_of(result) == {"1": "skipped", "2": "done"}
    assert result.outputs["adherence"][0].value["verdict"] == "deviated"


def seed_conversation(*, found: bool) -> Conversation:
    """The example vendor-onboarding conversation (seeds 003/004), its lookup result set."""
    data = example_conversation("vendor_onboarding").model_dump(mode="json")
    for event in data["events"]:
        if event["name"] == "vendor_lookup":
            event["result"] = {"vendorId": "V-0042", "status": "Active"} if found else None
    return Conversation.model_validate(data)


def test_the_seed_conversation_followed_and_the_violating_run() -> None:
    followed = check_adherence(vendor_onboarding(), seed_conversation(found=False).events)
    assert followed.verdict == "followed"
    violated = check_adherence(vendor_onboarding(), seed_conversation(found=True).events)
    assert violated.verdict == "deviated"
    created = next(o for o in violated.steps if o.step == "3.1")
    assert created.status == "skipped_condition_false"
    assert created.event_index == 3  # the vendor_create event of the seed's log
    assert next(o for o in violated.steps if o.step == "3").status == "skipped"


def test_through_the_fake_messages_api_the_simulated_analyst_cannot_override_the_log() -> None:
    """Whatever the simulated analyst records (values generated from the schema), the tool
    steps and the condition are the event log's."""
    conversation = seed_conversation(found=True)
    api = FakeMessagesAPI(responder=simulated_analyst)
    with serve_fake_messages_api(api) as base_url:

        async def go() -> AnalysisResult:
            model = build_anthropic_model("simulated", base_url, timeout=30)
            try:
                return await analyzers.run(
                    SPEC, conversation, model=model, procedures=[vendor_onboarding()]
                )
            finally:
                await model.aclose()

        result = asyncio.run(go())
    assert result.status == "succeeded", result.error
    value = result.outputs["adherence"][0].value
    statuses = {s["step"]: s["status"] for s in value["steps"]}
    assert statuses["2"] == "done"
    assert statuses["3"] == "skipped"
    assert statuses["3.1"] == "skipped_condition_false"
    assert value["verdict"] == "deviated"
    assert value["procedure"] == "vendor_onboarding"
