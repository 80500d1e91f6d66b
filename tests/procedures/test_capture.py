"""Capture: steps and templates from the event log; one procedure per task in the store."""

from __future__ import annotations

from typing import Any

from analyzers.procedures.candidates import record_candidate
from analyzers.procedures.capture import (
    Captured,
    candidate_procedure,
    capture_steps,
    find_duplicate,
    tool_sequence,
)
from analyzers.procedures.store import InMemoryProcedureStore
from schemas import Conversation, Procedure

VENDORS = [
    ("TechCorp", "procurement@techcorp.com", "CTR-2025-001"),
    ("Initech", "buying@initech.example", "CTR-2025-014"),
    ("Globex Supply", "ap@globex-supply.example", "CTR-2026-003"),
    ("Umbrella", "vendors@umbrella.example", "CTR-2026-010"),
]


def onboarding(
    number: int, *, extra_step: bool = False, tenant: str = "globex", found: bool = False
) -> Conversation:
    """A successful vendor onboarding: the customer gives the details, the agent looks the
    vendor up, finds nothing, creates it (and, with `extra_step`, notifies finance)."""
    name, contact, contract = VENDORS[number]
    vendor_id = f"V-{9900 + number}"
    events: list[dict[str, Any]] = [
        {
            "type": "tool_call",
            "name": "vendor_lookup",
            "arguments": {"name": name},
            "result": {"vendorId": "V-0001"} if found else None,
            "succeeded": True,
        },
        {
            "type": "tool_call",
            "name": "vendor_create",
            "arguments": {
                "name": name,
                "contact": contact,
                "contract": contract,
                "tier": "standard",
            },
            "result": {"vendorId": vendor_id, "status": "Created"},
            "succeeded": True,
        },
    ]
    if extra_step:
        events.append(
            {
                "type": "tool_call",
                "name": "notify_finance",
                "arguments": {"vendor_id": vendor_id, "channel": "email"},
                "result": {"ok": True},
            }
        )
    return Conversation.model_validate(
        {
            "conversation_id": f"conv-{number}",
            "tenant_id": tenant,
            "agent_id": "procurement-assistant",
            "outcome": "completed",
            "turns": [
                {"role": "user", "text": "Onboard the new vendor please"},
                {"role": "agent", "text": "Sure: name, contact and contract reference?"},
                {"role": "user", "text": f"{name}, {contact}, {contract}"},
                {"role": "agent", "text": f"Done, the vendor ID is {vendor_id}."},
            ],
            "events": events,
        }
    )


def captured(conversation: Conversation) -> Captured:
    found = capture_steps(conversation)
    assert found is not None
    return found


def candidate(conversation: Conversation) -> Procedure:
    return candidate_procedure(
        captured(conversation),
        conversation,
        name="vendor_onboarding",
        trigger_description="When an employee asks to onboard a new vendor.",
        patterns=["onboard * vendor"],
        instructions={"1": "Look the vendor up by name.", "2.1": "Create it {{as_said}}."},
    )


def customer_text(conversation: Conversation) -> str:
    return "\n".join(t.text for t in conversation.turns if t.role == "user")


def test_steps_templates_and_condition_come_from_the_event_log() -> None:
    found = captured(onboarding(0))
    assert found.tools == ("vendor_lookup", "vendor_create")
    assert found.parameters == ("vendor_name", "contact", "contract")
    assert found.steps[0].arguments == {"name": "{{vendor_name}}"}
    assert found.steps[1].arguments == {
        "name": "{{vendor_name}}",  # recurs, and the customer said it
        "contact": "{{contact}}",  # the customer said it
        "contract": "{{contract}}",
        "tier": "standard",  # nobody said it, it does not recur: a literal
    }
    assert found.condition == "vendor_lookup.result == null"
    procedure = candidate(onboarding(0))
    assert procedure.created_by == "learned"
    assert procedure.approved is False
    assert procedure.tenant_id == "globex"
    steps = procedure.model_dump(mode="json", by_alias=True, exclude_none=True)["steps"]
    assert steps[0]["instruction"] == "Look the vendor up by name."
    assert steps[1]["if"] == {"expression": "vendor_lookup.result == null"}
    assert steps[1]["steps"][0]["instruction"] == "Create it as_said."  # no undeclared {{}}


def test_a_later_argument_taken_from_an_earlier_result_references_it() -> None:
    found = captured(onboarding(0, extra_step=True))
    assert found.steps[2].arguments == {
        "vendor_id": "{{vendor_create.result.vendorId}}",
        "channel": "email",
    }


def test_one_call_or_failed_calls_are_no_procedure() -> None:
    conversation = onboarding(0).model_copy(update={"events": onboarding(0).events[:1]})
    assert capture_steps(conversation) is None


def test_three_similar_conversations_make_one_candidate_with_support_three() -> None:
    store = InMemoryProcedureStore()
    actions = []
    for number in range(3):
        conversation = onboarding(number)
        outcome = record_candidate(
            store,
            candidate(conversation),
            conversation_id=conversation.conversation_id,
            customer_text=customer_text(conversation),
        )
        actions.append(outcome.action)
    assert actions == ["created", "supported", "supported"]
    rows = store.list(tenant_id="globex")
    assert len(rows) == 1
    assert rows[0].status == "pending"
    assert rows[0].support == ("conv-0", "conv-1", "conv-2")
    # Pending: not active, so not matched.
    assert (
        store.find_match(
            "Onboard the new vendor TechCorp", tenant_id="globex", agent_id="procurement-assistant"
        )
        is None
    )


def test_a_fourth_with_an_extra_optional_step_adds_no_second_procedure() -> None:
    store = InMemoryProcedureStore()
    for number in range(3):
        conversation = onboarding(number)
        record_candidate(
            store,
            candidate(conversation),
            conversation_id=conversation.conversation_id,
            customer_text=customer_text(conversation),
        )
    fourth = onboarding(3, extra_step=True)
    outcome = record_candidate(
        store, candidate(fourth), conversation_id="conv-3", customer_text=customer_text(fourth)
    )
    assert outcome.action == "new_version"
    names = {row.name for row in store.list(tenant_id="globex")}
    assert names == {"vendor_onboarding"}
    newest = outcome.stored
    assert newest.version == 2
    assert newest.support == ("conv-0", "conv-1", "conv-2", "conv-3")
    assert tool_sequence(newest.procedure) == ("vendor_lookup", "vendor_create", "notify_finance")
    assert tool_sequence(newest.procedure, required_only=True) == (
        "vendor_lookup",
        "vendor_create",
    )
    # A fifth like the first three is covered by version 2 as is: support, no version 3.
    fifth = onboarding(1)
    again = record_candidate(
        store, candidate(fifth), conversation_id="conv-5", customer_text=customer_text(fifth)
    )
    assert again.action == "supported"
    assert again.stored.version == 2
    assert len(store.list(tenant_id="globex")) == 2  # versions 1 and 2 of one procedure


def test_approving_makes_it_active_for_matching_and_rejecting_keeps_it_out() -> None:
    store = InMemoryProcedureStore()
    first = onboarding(0)
    created = record_candidate(
        store, candidate(first), conversation_id="conv-0", customer_text=customer_text(first)
    )
    assert created.needs_review
    task = "Onboard the new vendor TechCorp"
    scope = {"tenant_id": "globex", "agent_id": "procurement-assistant"}
    store.approve(created.stored.id)
    match = store.find_match(task, **scope)
    assert match is not None
    assert match.stored.procedure.name == "vendor_onboarding"

    other = InMemoryProcedureStore()
    pending = record_candidate(
        other, candidate(first), conversation_id="conv-0", customer_text=customer_text(first)
    )
    other.reject(pending.stored.id)
    assert other.find_match(task, **scope) is None
    # A later duplicate does not bring the rejected procedure back for review.
    second = onboarding(1)
    later = record_candidate(
        other, candidate(second), conversation_id="conv-1", customer_text=customer_text(second)
    )
    assert later.action == "rejected_before"
    assert not later.needs_review
    assert other.find_match(task, **scope) is None


def test_other_tenant_or_other_tools_are_not_duplicates() -> None:
    globex = candidate(onboarding(0))
    acme = candidate(onboarding(0, tenant="acme"))
    assert find_duplicate(acme, [globex], customer_text(onboarding(0))) is None
    different = globex.model_copy(update={"steps": None, "content": "Just talk."})
    assert find_duplicate(globex, [different], "") is None
