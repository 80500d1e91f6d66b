"""The adherence core decides every tool step and expression `if` from the event log alone."""

from __future__ import annotations

from analyzers.procedures.adherence import check_adherence
from analyzers.procedures.tool_calls import match_arguments, same_value, split_embedded
from schemas.outputs import StepVerdict
from tests.procedures.agent_procedures import (
    TECHCORP,
    call,
    refund_with_identity,
    vendor_onboarding,
)

ORDER = {"order_id": "A-1"}
FOUND_ORDER = {"refundable": True, "total": 42.5}


def statuses(report: object) -> dict[str, str]:
    return {o.step: o.status for o in report.steps}  # type: ignore[attr-defined]


def test_followed_perfectly() -> None:
    events = [
        call("verify_identity", {"customer_id": "C-7"}, {"verified": True}),
        call("order_lookup", ORDER, FOUND_ORDER),
        call("issue_refund", {"order_id": "A-1", "amount": 42.5, "memo": "refund for A-1"}),
    ]
    report = check_adherence(refund_with_identity(), events)
    assert statuses(report) == {
        "1": "done",
        "2": "done",
        "3": "done",
        "3.1": "done",
        "4": "not_verifiable",  # an instruction: only the model reads it
    }
    assert [o.event_index for o in report.steps[:4]] == [0, 1, None, 2]
    assert report.verdict == "followed"
    assert report.score == 1.0
    assert [o.step for o in report.for_model()] == ["4"]


def test_agent_skipped_identity_verification() -> None:
    events = [
        call("order_lookup", ORDER, FOUND_ORDER),
        call("issue_refund", {"order_id": "A-1", "amount": 42.5, "memo": "refund for A-1"}),
    ]
    report = check_adherence(refund_with_identity(), events)
    assert statuses(report)["1"] == "skipped"
    assert statuses(report)["2"] == "done"
    assert statuses(report)["3.1"] == "done"
    assert report.verdict == "deviated"
    assert report.score == 0.75  # 3 of the 4 checkable steps done


def test_steps_out_of_order() -> None:
    events = [
        call("order_lookup", ORDER, FOUND_ORDER),
        call("verify_identity", {"customer_id": "C-7"}, {"verified": True}),
        call("issue_refund", {"order_id": "A-1", "amount": 42.5, "memo": "refund for A-1"}),
    ]
    report = check_adherence(refund_with_identity(), events)
    assert statuses(report)["1"] == "done"
    assert statuses(report)["2"] == "done_out_of_order"
    assert report.steps[1].event_index == 0
    assert statuses(report)["3.1"] == "done"
    assert report.verdict == "deviated"


def test_wrong_parameters_bound_inconsistently_across_steps() -> None:
    events = [
        call("verify_identity", {"customer_id": "C-7"}, {"verified": True}),
        call("order_lookup", ORDER, FOUND_ORDER),
        # Refunds another order than the one looked up; the amount is right.
        call("issue_refund", {"order_id": "A-2", "amount": 42.5, "memo": "refund for A-1"}),
    ]
    report = check_adherence(refund_with_identity(), events)
    assert statuses(report)["3.1"] == "wrong_parameters"
    assert report.steps[3].event_index == 2
    assert "order_id" in report.steps[3].note
    assert "A-2" not in report.steps[3].note
    assert report.verdict == "deviated"


def test_wrong_amount_against_the_earlier_result() -> None:
    events = [
        call("verify_identity", {"customer_id": "C-7"}, {"verified": True}),
        call("order_lookup", ORDER, FOUND_ORDER),
        call("issue_refund", {"order_id": "A-1", "amount": 99, "memo": "refund for A-1"}),
    ]
    report = check_adherence(refund_with_identity(), events)
    assert statuses(report)["3.1"] == "wrong_parameters"
    assert "amount" in report.steps[3].note


def test_took_the_branch_its_condition_excluded() -> None:
    events = [
        call("verify_identity", {"customer_id": "C-7"}, {"verified": True}),
        call("order_lookup", ORDER, {"refundable": False, "total": 42.5}),
        call("issue_refund", {"order_id": "A-1", "amount": 42.5, "memo": "refund for A-1"}),
    ]
    report = check_adherence(refund_with_identity(), events)
    assert statuses(report)["3"] == "skipped"  # the agent skipped the check
    assert statuses(report)["3.1"] == "skipped_condition_false"
    assert report.steps[3].event_index == 2
    assert "anyway" in report.steps[3].note
    assert report.verdict == "deviated"


def test_condition_false_and_honoured() -> None:
    events = [
        call("verify_identity", {"customer_id": "C-7"}, {"verified": True}),
        call("order_lookup", ORDER, {"refundable": False, "total": 42.5}),
    ]
    report = check_adherence(refund_with_identity(), events)
    assert statuses(report)["3"] == "skipped_condition_false"
    assert statuses(report)["3.1"] == "skipped_condition_false"
    assert report.verdict == "followed"
    assert report.score == 1.0


def test_condition_reading_a_step_never_run_is_not_verifiable() -> None:
    events = [call("verify_identity", {"customer_id": "C-7"}, {"verified": True})]
    report = check_adherence(refund_with_identity(), events)
    assert statuses(report)["2"] == "skipped"
    assert statuses(report)["3"] == "not_verifiable"
    assert "order_lookup" in report.steps[2].note
    assert statuses(report)["3.1"] == "not_verifiable"  # it may not have been due


def test_seed_vendor_found_but_created_anyway_is_a_violation() -> None:
    events = [
        call("vendor_lookup", {"name": "TechCorp"}, {"vendorId": "V-0042", "status": "Active"}),
        call("vendor_create", TECHCORP, {"vendorId": "V-9912", "status": "Created"}),
    ]
    report = check_adherence(vendor_onboarding(), events)
    assert report.procedure == "vendor_onboarding"
    assert report.procedure_version == 2
    assert statuses(report) == {
        "1": "not_verifiable",
        "2": "done",
        "3": "skipped",
        "3.1": "skipped_condition_false",
        "3.2": "skipped_condition_false",
        "4": "not_verifiable",
    }
    assert "vendor_lookup.result == null is false on e0" in report.steps[2].note
    assert report.verdict == "deviated"


def test_seed_vendor_not_found_and_created() -> None:
    events = [
        call("vendor_lookup", {"name": "TechCorp"}, None),
        call("vendor_create", TECHCORP, {"vendorId": "V-9912", "status": "Created"}),
    ]
    report = check_adherence(vendor_onboarding(), events)
    assert statuses(report)["3"] == "done"
    assert statuses(report)["3.1"] == "done"
    assert report.verdict == "followed"


def test_seed_created_under_another_name_than_looked_up() -> None:
    events = [
        call("vendor_lookup", {"name": "TechCorp"}, None),
        call("vendor_create", {**TECHCORP, "name": "Techcorp Ltd"}, {"vendorId": "V-1"}),
    ]
    report = check_adherence(vendor_onboarding(), events)
    assert statuses(report)["3.1"] == "wrong_parameters"


def test_dynamic_variable_binds_a_parameter_up_front() -> None:
    events = [
        call("vendor_lookup", {"name": "TechCorp"}, None),
        call("vendor_create", TECHCORP, {"vendorId": "V-9912"}),
    ]
    report = check_adherence(vendor_onboarding(), events, variables={"vendor_name": "Initech"})
    assert statuses(report)["2"] == "wrong_parameters"


def test_the_model_judges_only_instruction_steps_and_cannot_override_tool_steps() -> None:
    events = [
        call("vendor_lookup", {"name": "TechCorp"}, {"vendorId": "V-0042"}),
        call("vendor_create", TECHCORP, {"vendorId": "V-9912"}),
    ]
    judged = [
        StepVerdict(step="1", kind="instruction", status="done", evidence_turns=[1, 2]),
        StepVerdict(step="2", kind="tool", status="skipped", note="model says so"),
        StepVerdict(step="3", kind="if", status="done"),
        StepVerdict(step="3.1", kind="tool", status="done"),
        StepVerdict(step="4", kind="instruction", status="wrong_parameters"),
    ]
    report = check_adherence(vendor_onboarding(), events, judged=judged)
    assert statuses(report) == {
        "1": "done",
        "2": "done",
        "3": "skipped",
        "3.1": "skipped_condition_false",
        "3.2": "skipped_condition_false",
        "4": "not_verifiable",  # a status an instruction cannot have is not taken
    }
    assert report.steps[0].evidence_turns == (1, 2)
    assert report.verdict == "deviated"


def test_natural_language_condition_is_the_models_and_decides_nested_tool_steps() -> None:
    procedure = refund_with_identity(
        steps=[
            {"tool": "verify_identity", "arguments": {"customer_id": "{{customer_id}}"}},
            {
                "if": {"natural_language": "The customer asked to cancel the order"},
                "steps": [{"tool": "cancel_order", "arguments": {"order_id": "{{order_id}}"}}],
            },
        ]
    )
    events = [
        call("verify_identity", {"customer_id": "C-7"}),
        call("cancel_order", {"order_id": "A-1"}),
    ]
    unjudged = check_adherence(procedure, events)
    assert statuses(unjudged)["2"] == "not_verifiable"
    assert statuses(unjudged)["2.1"] == "done"  # the call is in the log either way
    said_no = [StepVerdict(step="2", kind="if", status="skipped_condition_false")]
    report = check_adherence(procedure, events, judged=said_no)
    assert statuses(report)["2"] == "skipped"
    assert statuses(report)["2.1"] == "skipped_condition_false"
    assert report.verdict == "deviated"


def test_free_form_procedure_is_one_instruction_for_the_model() -> None:
    procedure = refund_with_identity(steps=None, content="Be kind and refund when due.")
    report = check_adherence(procedure, [])
    assert statuses(report) == {"1": "not_verifiable"}
    assert report.verdict == "unknown"


def test_optional_tool_step_not_done_is_no_deviation() -> None:
    procedure = refund_with_identity(
        steps=[
            {"tool": "verify_identity", "arguments": {"customer_id": "{{customer_id}}"}},
            {"tool": "send_survey", "arguments": {}, "optional": True},
        ]
    )
    report = check_adherence(procedure, [call("verify_identity", {"customer_id": "C-7"})])
    assert statuses(report) == {"1": "done", "2": "skipped"}
    assert report.verdict == "followed"


def test_templates_match_exactly() -> None:
    assert match_arguments({"a": "{{x}}"}, {"a": 1}, {}, {}) == {"x": 1}
    assert match_arguments({"a": "{{x}}"}, {"a": 1, "b": 2}, {}, {}) is None
    assert match_arguments({"a": "id-{{x}}-z"}, {"a": "id-7-z"}, {}, {}) == {"x": "7"}
    assert match_arguments({"a": "id-{{x}}"}, {"a": "ID-7"}, {}, {}) is None
    assert match_arguments({"a": ["{{x}}", "{{x}}"]}, {"a": [1, 2]}, {}, {}) is None
    assert same_value(1, 1.0)
    assert not same_value(True, 1)
    assert not same_value("1", 1)


def test_embedded_placeholders_split_at_the_first_literal_in_one_pass() -> None:
    assert split_embedded("x-{{a}}-{{b}}", "x-1-2-3") == [("a", "1"), ("b", "2-3")]
    assert split_embedded("{{a}}{{b}}", "12") == [("a", ""), ("b", "12")]
    assert split_embedded("id-{{a}}.", "id-7") is None
    assert split_embedded("{{a}}:{{b}}:{{c}}:{{d}}!", "a:" * 200_000) is None  # no backtracking


def test_a_hostile_argument_against_a_many_placeholder_template_is_quick() -> None:
    procedure = refund_with_identity(
        parameters=[{"name": name} for name in "abcde"],
        steps=[{"tool": "note", "arguments": {"text": "{{a}} {{b}} {{c}} {{d}} {{e}} end"}}],
    )
    events = [call("note", {"text": "w " * 100_000})]
    report = check_adherence(procedure, events)
    assert statuses(report) == {"1": "wrong_parameters"}
