"""Trigger expressions over the event log and tool results, not only the header: the examples
the README documents, checked against a conversation with tool calls."""

from __future__ import annotations

import pytest

from analyzers.definitions.triggers import analyzer_applies
from schemas import AnalyzerSpec, Conversation

CONVERSATION = Conversation.model_validate(
    {
        "conversation_id": "c-events",
        "tenant_id": "acme",
        "agent_id": "support-bot",
        "channel": "voice",
        "started_at": "2026-11-20T10:00:00Z",
        "ended_at": "2026-11-20T10:07:12Z",
        "outcome": "completed",
        "turns": [{"role": "user", "text": "Please set up TechCorp as a vendor."}],
        "events": [
            {
                "type": "tool_call",
                "name": "vendor_create",
                "arguments": {"name": "TechCorp"},
                "result": {"vendorId": "V-9912", "status": "pending_review"},
                "succeeded": True,
                "duration_ms": 342,
            },
            {
                "type": "tool_call",
                "name": "refund_issue",
                "arguments": {"amount": 120},
                "result": {"error": "card_declined"},
                "succeeded": False,
            },
            {"type": "transfer", "metadata": {"queue": "billing"}},
        ],
    }
)


def spec(expression: str) -> AnalyzerSpec:
    return AnalyzerSpec.model_validate(
        {
            "name": "watch",
            "description": "Watches tool calls.",
            "instructions": "Look.",
            "trigger": {"expression": expression},
            "outputs": [{"name": "note", "description": "A note.", "schema": {"type": "object"}}],
        }
    )


@pytest.mark.parametrize(
    ("expression", "applies"),
    [
        # Any tool call that failed.
        ('events.exists(e, e.type == "tool_call" && e.succeeded == false)', True),
        # A tool result's field (guard keys a result may not have with has()).
        (
            'events.exists(e, e.name == "vendor_create" && has(e.result.status) '
            '&& e.result.status == "pending_review")',
            True,
        ),
        ('events.exists(e, e.name == "refund_issue" && e.arguments.amount > 100)', True),
        ('events.exists(e, e.name == "refund_issue" && e.arguments.amount > 500)', False),
        # Header and events together.
        ('channel == "voice" && size(events.filter(e, e.type == "tool_call")) >= 2', True),
        ('events.exists(e, e.type == "transfer" && e.metadata.queue == "sales")', False),
        ('events.all(e, e.type != "escalation")', True),
    ],
)
def test_triggers_read_events_and_tool_results(expression: str, applies: bool) -> None:
    assert analyzer_applies(spec(expression), CONVERSATION).applies is applies


def test_an_unguarded_missing_result_field_is_a_reason_not_a_crash() -> None:
    decision = analyzer_applies(
        spec('events.exists(e, e.name == "refund_issue" && e.result.status == "ok")'),
        CONVERSATION,
    )
    assert not decision.applies
    assert "could not be evaluated" in decision.reason
    assert "card_declined" not in decision.reason
