"""Agent procedures and event logs the adherence and capture tests share.

`vendor_onboarding` is the seed's (003/004) admin-defined procedure, as the agent follows it;
`refund_with_identity` is a support agent's refund procedure that starts by verifying identity.
"""

from __future__ import annotations

from typing import Any

from schemas import Procedure
from schemas.conversation import Event

VENDOR_ONBOARDING: dict[str, Any] = {
    "name": "vendor_onboarding",
    "version": 2,
    "description": "Onboard a new vendor into the procurement system",
    "trigger": {
        "description": "When an employee asks to onboard, add or register a new vendor.",
        "patterns": ["onboard * vendor|add new vendor|register vendor"],
    },
    "tenant_id": "globex",
    "agent_id": "procurement-assistant",
    "parameters": [{"name": "vendor_name"}, {"name": "contact"}, {"name": "contract_ref"}],
    "steps": [
        {"instruction": "Collect vendor name, contact, and contract reference from the user."},
        {"tool": "vendor_lookup", "arguments": {"name": "{{vendor_name}}"}},
        {
            "if": {"expression": "vendor_lookup.result == null"},
            "steps": [
                {
                    "tool": "vendor_create",
                    "arguments": {
                        "name": "{{vendor_name}}",
                        "contact": "{{contact}}",
                        "contract": "{{contract_ref}}",
                    },
                },
                {"instruction": "Confirm creation to the user with the new vendor ID."},
            ],
        },
        {"instruction": "If the vendor already existed, tell the user so and stop."},
    ],
}

REFUND_WITH_IDENTITY: dict[str, Any] = {
    "name": "refund_with_identity",
    "description": "Refund an order after verifying the caller's identity",
    "trigger": {"description": "When a customer asks for a refund.", "patterns": ["refund"]},
    "parameters": [{"name": "customer_id"}, {"name": "order_id"}],
    "steps": [
        {"tool": "verify_identity", "arguments": {"customer_id": "{{customer_id}}"}},
        {"tool": "order_lookup", "arguments": {"order_id": "{{order_id}}"}},
        {
            "if": {"expression": "order_lookup.result.refundable == true"},
            "steps": [
                {
                    "tool": "issue_refund",
                    "arguments": {
                        "order_id": "{{order_id}}",
                        "amount": "{{order_lookup.result.total}}",
                        "memo": "refund for {{order_id}}",
                    },
                }
            ],
        },
        {"instruction": "Tell the customer the outcome."},
    ],
}


def vendor_onboarding(**overrides: Any) -> Procedure:
    return Procedure.model_validate({**VENDOR_ONBOARDING, **overrides})


def refund_with_identity(**overrides: Any) -> Procedure:
    return Procedure.model_validate({**REFUND_WITH_IDENTITY, **overrides})


def call(tool: str, arguments: dict[str, Any], result: Any = None, **extra: Any) -> Event:
    """A tool-call event as the agent's platform records it."""
    return Event.model_validate(
        {"type": "tool_call", "name": tool, "arguments": arguments, "result": result, **extra}
    )


TECHCORP = {"name": "TechCorp", "contact": "procurement@techcorp.com", "contract": "CTR-2025-001"}
