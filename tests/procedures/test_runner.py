"""The structured-procedure runner: parameters gathered in one turn, `required` honoured, and a
condition that cannot be evaluated recorded as an error (never a silent false)."""

from __future__ import annotations

from typing import Any

from analyzers.runtime.session import RunOptions
from analyzers.testing import ScriptedModel, reply, text, tool_call
from analyzers.tools.base import HttpResponse
from schemas import AnalysisResult, Procedure
from tests.analyzers.helpers import (
    RecordingTransport,
    example_conversation,
    example_definitions,
    run,
)

LOOKUP = "https://procurement.globex.example/api/vendors"
RECORD = tool_call(
    "record_vendor_check", {"unknown": True, "unknown_reason": "see trace", "evidence_turns": []}
)


def procedure(
    parameters: list[dict[str, Any]], steps: list[dict[str, Any]], **more: Any
) -> Procedure:
    """A newer version of the seed's procedure, so the analyzer runs this one."""
    _, procedures = example_definitions()
    seed = next(p for p in procedures if p.name == "vendor_onboarding")
    data = seed.model_dump(by_alias=True, exclude_none=True)
    data.update(version=2, parameters=parameters, steps=steps, **more)
    return Procedure.model_validate(data)


def run_with(proc: Procedure, model: ScriptedModel, lookup: HttpResponse) -> AnalysisResult:
    analyzers_by_name, _ = example_definitions()
    transport = RecordingTransport({LOOKUP: lookup})
    return run(
        analyzers_by_name["vendor_onboarding_check"],
        example_conversation("vendor_onboarding"),
        model,
        procedures=[proc],
        options=RunOptions(http=transport),
    )


def user_texts(model: ScriptedModel) -> str:
    return "\n".join(
        str(block.get("text", ""))
        for message in model.requests[-1].messages
        if message["role"] == "user"
        for block in message["content"]
    )


def test_all_unknown_parameters_are_asked_for_in_one_turn() -> None:
    """Three parameters no conversation variable gives, read by two different steps: one
    question lists all three; the optional one left out takes its default."""
    proc = procedure(
        [
            {"name": "supplier", "description": "The vendor's name."},
            {"name": "contact", "required": False, "default": "nobody@example.com"},
            {"name": "region", "required": False},
        ],
        [
            {"instruction": "Read the request."},
            {"tool": "vendor_lookup", "arguments": {"name": "{{supplier}}"}},
            {"instruction": "Check {{contact}} in {{region}}."},
        ],
    )
    model = ScriptedModel(
        [
            reply(text("Read.")),
            reply(tool_call("provide_parameters", {"values": {"supplier": "TechCorp"}})),
            reply(text("Given.")),
            reply(text("Checked.")),
            reply(RECORD),
            reply(text("Recorded.")),
        ]
    )
    result = run_with(proc, model, HttpResponse(200, {"vendorId": "V-9912"}))

    assert result.status == "succeeded", result.error
    assert model.exhausted
    asks = [t for t in result.trace if t.tool_name == "provide_parameters"]
    assert len(asks) == 1
    question = model.requests[1].messages[-1]["content"][-1]["text"]
    for name in ("supplier", "contact", "region"):
        assert f"- {name} (string)" in question
    [record] = result.procedures
    assert record.version == 2
    assert {p.name: (p.value, p.source) for p in record.parameters} == {
        "supplier": ("TechCorp", "model"),
        "contact": ("nobody@example.com", "default"),
        "region": (None, "missing"),
    }
    assert record.status == "completed"
    assert "Step 3: Check nobody@example.com in null." in user_texts(model)


def test_a_missing_required_parameter_is_asked_once_then_the_step_is_not_runnable() -> None:
    proc = procedure(
        [{"name": "supplier", "description": "The vendor's name."}],
        [
            {"instruction": "Read the request."},
            {"tool": "vendor_lookup", "arguments": {"name": "{{supplier}}"}},
            {"instruction": "Say what you found."},
        ],
    )
    model = ScriptedModel(
        [
            reply(text("Read.")),
            reply(tool_call("provide_parameters", {"values": {"supplier": None}})),
            reply(text("The conversation does not say.")),
            reply(RECORD),
            reply(text("Recorded.")),
        ]
    )
    transport_response = HttpResponse(200, {"vendorId": "V-9912"})
    result = run_with(proc, model, transport_response)

    assert result.status == "succeeded", result.error
    assert model.exhausted
    assert [t.tool_name for t in result.trace if t.tool_name != "record_vendor_check"] == [
        "provide_parameters"
    ]
    [record] = result.procedures
    by_order = {step.order: step for step in record.steps}
    assert (by_order[2].ran, by_order[2].status) == (False, "not_runnable")
    assert "required parameter(s) ['supplier']" in (by_order[2].not_run_reason or "")
    assert (record.status, record.stopped_at) == ("stopped", 2)
    assert by_order[3].not_run_reason == "the procedure stopped at step 2"


def test_a_condition_that_cannot_be_evaluated_is_an_error_in_the_trace() -> None:
    """`lookup.result.status` on a null result cannot be evaluated: the step is recorded as
    failed, the trace holds the error, the procedure stops, the model is told."""
    proc = procedure(
        [],
        [
            {"instruction": "Read the request."},
            {"tool": "vendor_lookup", "id": "lookup", "arguments": {"name": "{{vendor_name}}"}},
            {"if": {"expression": 'lookup.result.status == "Created"'}, "steps": [
                {"instruction": "Confirm the status."},
            ]},
            {"instruction": "Say what you found."},
        ],
        dynamic_variables=["vendor_name"],
    )  # fmt: skip
    model = ScriptedModel([reply(text("Read.")), reply(RECORD), reply(text("Recorded."))])
    result = run_with(proc, model, HttpResponse(404, {"error": "none"}))

    assert result.status == "succeeded", result.error
    failed = [t for t in result.trace if t.tool_name == "evaluate_condition"]
    assert len(failed) == 1
    assert not failed[0].succeeded
    assert failed[0].procedure_step_order == 3
    assert "failed" in (failed[0].error or "")
    [record] = result.procedures
    by_order = {step.order: step for step in record.steps}
    assert by_order[2].result is None
    assert (by_order[3].status, by_order[3].branch) == ("failed", None)
    assert (record.status, record.stopped_at) == ("stopped", 3)
    assert [by_order[n].ran for n in (4, 5)] == [False, False]
    assert "its condition could not be evaluated" in user_texts(model)
