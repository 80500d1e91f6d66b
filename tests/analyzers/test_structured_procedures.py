"""Structured procedures run as a state machine: runtime tool steps, both kinds of `if`."""

from __future__ import annotations

from analyzers.runtime.session import RunOptions
from analyzers.testing import ScriptedModel, reply, text, tool_call
from analyzers.tools.base import HttpResponse
from tests.analyzers.helpers import (
    RecordingTransport,
    example_conversation,
    example_definitions,
    run,
)

TICKET = {"ticket_id": "FO-1", "priority": "high", "created_now": True}
CHURN = {"level": "high", "signals": ["threatened to leave"]}


def crm(tier: str) -> RecordingTransport:
    """A CRM fake: the customer lookup answers with `tier`; ticket upserts succeed."""
    return RecordingTransport(
        {
            "https://crm.acme.example/api/v2/accounts/": HttpResponse(200, {"tier": tier}),
            "https://crm.acme.example/api/v2/tickets": HttpResponse(201, {"ticket_id": "FO-1"}),
        }
    )


def scripted(decision: bool, *, business: bool) -> ScriptedModel:
    """The model's side of the escalation_ticket procedure. Only when the expression branch
    (step 4) runs is a parameter (issue_summary) needed that no conversation variable gives."""
    asked = [
        # Before step 4 the runtime asks, once, for the parameters no variable supplies.
        reply(
            tool_call(
                "provide_parameters",
                {
                    "values": {
                        "account_id": "ACC-B-20931",
                        "issue_summary": "Office fibre down for two days",
                    }
                },
            )
        ),
        reply(text("Given.")),
    ]
    return ScriptedModel(
        [
            # Step 1 (instruction): the model reads and ends its turn.
            reply(text("Account ACC-B-20931; office internet down two days.")),
            *(asked if business else []),
            # Step 5 (instruction) after the expression-if ran ticket_upsert, or skipped it.
            reply(text("Ticket FO-1 tracks it.")),
            # Step 6: the natural-language condition.
            reply(tool_call("decide_condition", {"holds": decision, "reason": "turn 11"})),
            reply(text("Decided.")),
            *([reply(text("Churn note: wants a technician today."))] if decision else []),
            # Final: record the outputs.
            reply(
                tool_call("record_ticket", {"value": TICKET, "evidence_turns": [7]}),
                tool_call("record_churn_risk", {"value": CHURN, "evidence_turns": [11]}),
            ),
            reply(text("Recorded.")),
        ]
    )


def test_business_tier_runs_the_expression_branch_with_templates_filled() -> None:
    """Tool steps are called by the runtime with their templates filled from parameters,
    dynamic variables and earlier results; a true expression `if` runs its nested step; a
    true natural-language `if` becomes a model turn."""
    analyzers_by_name, procedures = example_definitions()
    transport = crm("business")
    model = scripted(decision=True, business=True)
    result = run(
        analyzers_by_name["escalation_triage"],
        example_conversation("escalated_outage"),
        model,
        procedures=procedures,
        options=RunOptions(http=transport, secrets={"ACME_CRM_TOKEN": "tok-123"}),
    )

    assert result.status == "succeeded", result.error
    assert [r.url for r in transport.requests] == [
        "https://crm.acme.example/api/v2/accounts/ACC-B-20931",
        "https://crm.acme.example/api/v2/tickets",
    ]
    assert transport.requests[1].body == {
        "account_id": "ACC-B-20931",
        "priority": "high",
        "summary": "Office fibre down for two days (Marek Kowalski, business tier)",
    }
    assert transport.requests[0].headers["Authorization"] == "Bearer tok-123"
    steps = [
        (t.tool_name, t.procedure_name, t.procedure_step_order)
        for t in result.trace
        if t.procedure_name
    ]
    # account_id comes from the conversation's dynamic variable of that name, so the lookup
    # runs without asking; the one question for the rest (issue_summary) comes before step 4.
    assert steps == [
        ("crm_lookup_customer", "escalation_ticket", 2),
        ("provide_parameters", "escalation_ticket", 4),
        ("ticket_upsert", "escalation_ticket", 4),
        ("decide_condition", "escalation_ticket", 6),
    ]
    assert "tok-123" not in str(result.model_dump())
    told = " ".join(
        block.get("text", "")
        for request in model.requests
        for message in request.messages
        if message["role"] == "user"
        for block in message["content"]
    )
    assert 'condition `customer.result.tier == "business"` is True' in told
    assert "Step 7: Record a churn-risk note" in told
    assert result.outputs["ticket"][0].value == TICKET


def test_other_tiers_skip_the_expression_branch() -> None:
    """A false expression skips its nested tool step; a false natural-language condition skips
    its nested instruction."""
    analyzers_by_name, procedures = example_definitions()
    transport = crm("consumer")
    model = scripted(decision=False, business=False)
    result = run(
        analyzers_by_name["escalation_triage"],
        example_conversation("escalated_outage"),
        model,
        procedures=procedures,
        options=RunOptions(http=transport, secrets={"ACME_CRM_TOKEN": "t"}),
    )

    assert result.status == "succeeded", result.error
    assert len(transport.requests) == 1
    assert "ticket_upsert" not in [t.tool_name for t in result.trace]
    assert model.exhausted


def test_a_failing_tool_step_stops_the_procedure_and_tells_the_model() -> None:
    """A tool step that fails (here: a 500) stops the procedure; the model is told why and
    still records its outputs."""
    analyzers_by_name, procedures = example_definitions()
    transport = RecordingTransport(
        {
            "https://crm.acme.example/": HttpResponse(500, {"error": "down"}),
        }
    )
    model = ScriptedModel(
        [
            reply(text("Read.")),
            reply(
                tool_call(
                    "record_ticket",
                    {"unknown": True, "unknown_reason": "CRM down", "evidence_turns": []},
                ),
                tool_call("record_churn_risk", {"value": CHURN, "evidence_turns": [11]}),
            ),
            reply(text("Recorded.")),
        ]
    )
    result = run(
        analyzers_by_name["escalation_triage"],
        example_conversation("escalated_outage"),
        model,
        procedures=procedures,
        options=RunOptions(http=transport, secrets={"ACME_CRM_TOKEN": "t"}),
    )

    assert result.status == "succeeded", result.error
    # The lookup's account_id comes from the conversation's variables: no question was asked
    # before it failed, so the second request is the final one.
    final = " ".join(b.get("text", "") for b in model.requests[1].messages[-1]["content"])
    assert "failed" in final
    assert "stops here" in final
    lookup = next(t for t in result.trace if t.tool_name == "crm_lookup_customer")
    assert not lookup.succeeded
    assert lookup.procedure_step_order == 2


def test_procedure_of_another_tenant_is_not_used() -> None:
    """A procedure scoped to another tenant never runs; the analyzer works without it."""
    analyzers_by_name, procedures = example_definitions()
    conv = example_conversation("escalated_outage").model_copy(update={"tenant_id": "globex"})
    model = ScriptedModel(
        [
            reply(
                tool_call(
                    "record_ticket",
                    {"unknown": True, "unknown_reason": "none", "evidence_turns": []},
                ),
                tool_call("record_churn_risk", {"value": CHURN, "evidence_turns": [1]}),
            ),
            reply(text("Recorded.")),
        ]
    )
    result = run(analyzers_by_name["escalation_triage"], conv, model, procedures=procedures)
    assert result.status == "succeeded"
    assert not any(t.procedure_name for t in result.trace)
    assert "Procedure escalation_ticket" not in model.requests[0].messages[0]["content"][0]["text"]


def test_free_form_procedure_goes_into_the_brief() -> None:
    """A free-form procedure's markdown is part of the analyzer's brief."""
    analyzers_by_name, procedures = example_definitions()
    model = ScriptedModel(
        [
            reply(
                tool_call(
                    "record_refund_assessment",
                    {
                        "value": {
                            "refund_issued": True,
                            "amount_eur": 49.0,
                            "within_agent_limit": True,
                            "policy_followed": "no",
                            "problems": ["full refund was due"],
                        },
                        "evidence_turns": [20],
                    },
                )
            ),
            reply(text("Recorded.")),
        ]
    )
    result = run(
        analyzers_by_name["refund_review"],
        example_conversation("angry_refund"),
        model,
        procedures=procedures,
    )
    assert result.status == "succeeded", result.error
    brief = model.requests[0].messages[0]["content"][0]["text"]
    assert "## Procedure refund_policy" in brief
    assert "A cancellation fee is refundable in full" in brief
