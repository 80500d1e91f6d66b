"""The built-in `procedure_capture` through `analyzers.run`: steps from the event log, words from
the (scripted) model, and no model call when there is nothing to propose."""

from __future__ import annotations

from typing import Any

from analyzers.definitions.triggers import analyzer_applies
from analyzers.runtime.capture_support import slug
from analyzers.testing import ScriptedModel, reply, text, tool_call
from tests.analyzers.helpers import builtin_analyzer, run
from tests.procedures.test_capture import candidate, onboarding

SPEC = builtin_analyzer("procedure_capture")

WORDS: dict[str, Any] = {
    "name": "Vendor Onboarding",
    "trigger_description": "When an employee asks to onboard a new vendor.",
    "patterns": ["onboard * vendor", "add new vendor"],
    "description": "Onboard a vendor after checking it does not exist.",
    "instructions": [
        {"step": "1", "instruction": "Look the vendor up by name."},
        {"step": "2.1", "instruction": "Create the vendor with {{vendor_name}}."},
        {"step": "9", "instruction": "A step that does not exist."},
    ],
}


def words_model() -> ScriptedModel:
    return ScriptedModel(
        [
            reply(
                tool_call(
                    "record_output",
                    {"output": "procedure_candidate", "value": WORDS, "evidence_turns": [0, 2]},
                )
            ),
            reply(text("Recorded.")),
        ]
    )


def test_candidate_steps_from_the_event_log_words_from_the_model() -> None:
    conversation = onboarding(0)
    assert analyzer_applies(SPEC, conversation).applies
    model = words_model()
    result = run(SPEC, conversation, model)
    assert result.status == "succeeded", result.error
    recorded = result.outputs["procedure_candidate"][0]
    procedure = recorded.value["procedure"]
    assert procedure["name"] == "vendor_onboarding"
    assert procedure["approved"] is False
    assert procedure["created_by"] == "learned"
    assert procedure["tenant_id"] == "globex"
    assert procedure["steps"][0] == {
        "tool": "vendor_lookup",
        "arguments": {"name": "{{vendor_name}}"},
        "instruction": "Look the vendor up by name.",
        "optional": False,
    }
    assert procedure["steps"][1]["if"] == {"expression": "vendor_lookup.result == null"}
    assert recorded.evidence_events == [0, 1]
    brief = str(model.requests[0].messages[0]["content"])
    assert 'call vendor_lookup with {"name": "{{vendor_name}}"}' in brief


def test_covered_by_an_approved_procedure_means_nothing_to_propose() -> None:
    approved = candidate(onboarding(0)).model_copy(update={"approved": True})
    model = ScriptedModel([])
    result = run(SPEC, onboarding(1), model, procedures=[approved])
    assert model.requests == []
    recorded = result.outputs["procedure_candidate"][0]
    assert recorded.unknown
    assert "already covers it" in (recorded.unknown_reason or "")


def test_unsuccessful_or_single_call_conversations_do_not_trigger() -> None:
    failed = onboarding(0).model_copy(update={"outcome": "failed"})
    assert not analyzer_applies(SPEC, failed).applies
    single = onboarding(0).model_copy(update={"events": onboarding(0).events[:1]})
    assert not analyzer_applies(SPEC, single).applies


def test_model_names_become_procedure_names() -> None:
    assert slug("Vendor Onboarding!") == "vendor_onboarding"
    assert slug("123 go") == "procedure_123_go"
    assert slug("") == "procedure"
