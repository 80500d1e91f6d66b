"""Retell AI call webhooks (`call_analyzed` by default, `call_ended` when a source lists it).

Shape (retell-python-sdk `PhoneCallResponse`/`WebCallResponse`, and the webhook docs): the body
is `{"event", "call"}`; `call` has `call_id`, `agent_id`, `agent_version`, `call_type`,
`start_timestamp`/`end_timestamp` (Unix milliseconds), `disconnection_reason`,
`transcript_with_tool_calls` (utterances with `role` agent/user/transfer_target, `content` and
`words` timed in seconds from the call start; `tool_call_invocation` items with `tool_call_id`,
`name`, `arguments`; `tool_call_result` items with `tool_call_id`, `content`, `successful`),
`transcript_object` (utterances only), `retell_llm_dynamic_variables`,
`collected_dynamic_variables`, `call_analysis` and `metadata`.

Signature (retell-python-sdk `lib/webhook_auth.py`): header
`x-retell-signature: v=<unix ms>,d=<hex HMAC-SHA256(api key, raw body + "<ms>")>`, refused when
more than 5 minutes away from now in either direction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from worker.http.adapters.common import (
    Ignored,
    Mapped,
    MappingError,
    SignatureError,
    any_secret_matches,
    build_conversation,
    check_fresh,
    field,
    json_arguments,
    json_result,
    lower_headers,
    require_secrets,
    seconds_after,
    unix_seconds,
)

SIGNATURE_HEADER = "x-retell-signature"
TOLERANCE_SECONDS = 5 * 60
DEFAULT_EVENTS = frozenset({"call_analyzed"})
_SIGNATURE = re.compile(r"v=(\d{1,16}),d=([0-9a-f]{64})")
_SPEAKERS = {"agent": "agent", "user": "user", "transfer_target": "agent"}
_CHANNELS = {"phone_call": "voice", "web_call": "voice", "chat": "chat"}


def verify(body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: float) -> None:
    """Raise SignatureError unless `body` is signed by one of `secrets` within 5 minutes."""
    require_secrets(secrets)
    header = lower_headers(headers).get(SIGNATURE_HEADER)
    if not header:
        raise SignatureError("the x-retell-signature header is missing")
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        raise SignatureError("the x-retell-signature header is not v=<ms>,d=<hex digest>")
    stamp, digest = match.groups()
    check_fresh(int(stamp) / 1000, now, TOLERANCE_SECONDS, future=True)
    if not any_secret_matches(secrets, body + stamp.encode(), [digest]):
        raise SignatureError("no configured secret produced this signature")


def parse(payload: Any, *, tenant: str, events: frozenset[str]) -> Mapped | Ignored:
    """Map a call webhook to a conversation; event types the source does not list are ignored."""
    event_type = field(payload, "event", str)
    if event_type not in events:
        return Ignored(event_type)
    call = field(payload, "call", dict)
    call_id = field(call, "call_id", str, where="call")
    started_at = _millis(call, "start_timestamp")
    ended_at = _millis(call, "end_timestamp")
    if "transcript_with_tool_calls" in call and call["transcript_with_tool_calls"] is not None:
        turns, events_ = _with_tool_calls(
            field(call, "transcript_with_tool_calls", list, where="call"), started_at
        )
    else:
        turns = _utterances(
            field(call, "transcript_object", list, required=False, where="call") or [], started_at
        )
        events_ = []
    variables = {
        **(field(call, "retell_llm_dynamic_variables", dict, required=False, where="call") or {}),
        **(field(call, "collected_dynamic_variables", dict, required=False, where="call") or {}),
    }
    analysis = field(call, "call_analysis", dict, required=False, where="call")
    successful = (analysis or {}).get("call_successful")
    outcome = (
        "successful" if successful is True else "unsuccessful" if successful is False else "unknown"
    )
    version = call.get("agent_version")
    conversation = build_conversation(
        {
            "conversation_id": call_id,
            "tenant_id": tenant,
            "agent_id": field(call, "agent_id", str, required=False, where="call"),
            "agent_version": None if version is None else str(version),
            "channel": _CHANNELS.get(str(call.get("call_type")), "other"),
            "started_at": started_at,
            "ended_at": ended_at,
            "outcome": outcome,
            "termination_reason": field(
                call, "disconnection_reason", str, required=False, where="call"
            ),
            "turns": turns,
            "events": events_,
            "dynamic_variables": variables,
            "metadata": {
                "platform": "retell",
                "call_analysis": analysis,
                "call_metadata": call.get("metadata"),
                "call_status": call.get("call_status"),
                "direction": call.get("direction"),
            },
        },
        field_prefix="conversation.",
    )
    return Mapped(conversation, f"{call_id}:{event_type}", event_type)


def _millis(call: dict[str, Any], name: str) -> datetime | None:
    value = field(call, name, (int, float), required=False, where="call")
    return None if value is None else unix_seconds(value / 1000, f"call.{name}")


def _turn(item: dict[str, Any], where: str, started_at: datetime | None) -> dict[str, Any]:
    role = field(item, "role", str, where=where)
    words = field(item, "words", list, required=False, where=where) or []
    first = words[0] if words and isinstance(words[0], dict) else {}
    offset = first.get("start")
    at = None
    if started_at is not None and isinstance(offset, int | float) and not isinstance(offset, bool):
        at = seconds_after(started_at, offset, f"{where}.words.0.start")
    metadata: dict[str, Any] = {"speaker": role} if role == "transfer_target" else {}
    return {
        "role": _SPEAKERS[role],
        "text": field(item, "content", str, where=where),
        "at": at,
        "metadata": metadata,
    }


def _utterances(items: list[Any], started_at: datetime | None) -> list[dict[str, Any]]:
    turns = []
    for position, item in enumerate(items):
        where = f"call.transcript_object.{position}"
        if not isinstance(item, dict):
            raise MappingError(where, "must be an object")
        if item.get("role") not in _SPEAKERS:
            raise MappingError(f"{where}.role", "must be 'agent', 'user' or 'transfer_target'")
        turns.append(_turn(item, where, started_at))
    return turns


def _with_tool_calls(
    items: list[Any], started_at: datetime | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Utterances become turns; an invocation becomes a tool-call event at the turn before it
    (the agent turn that made it), and its result completes the event with the same id. Other
    entries (node transitions, DTMF) become events of their own type."""
    turns: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    calls: dict[str, dict[str, Any]] = {}
    for position, item in enumerate(items):
        where = f"call.transcript_with_tool_calls.{position}"
        if not isinstance(item, dict):
            raise MappingError(where, "must be an object")
        role = field(item, "role", str, where=where)
        turn_index = len(turns) - 1 if turns else None
        if role in _SPEAKERS:
            turns.append(_turn(item, where, started_at))
        elif role == "tool_call_invocation":
            event = {
                "type": "tool_call",
                "name": field(item, "name", str, where=where),
                "arguments": json_arguments(item.get("arguments")),
                "turn_index": turn_index,
                "metadata": {"tool_call_id": item.get("tool_call_id")},
            }
            events.append(event)
            if isinstance(item.get("tool_call_id"), str):
                calls[item["tool_call_id"]] = event
        elif role == "tool_call_result":
            known = calls.get(field(item, "tool_call_id", str, where=where))
            if known is not None:
                event = known
            else:
                event = {
                    "type": "tool_result",
                    "turn_index": turn_index,
                    "metadata": {"tool_call_id": item["tool_call_id"]},
                }
                events.append(event)
            event["result"] = json_result(item.get("content"))
            if isinstance(item.get("successful"), bool):
                event["succeeded"] = item["successful"]
        else:
            details = {k: v for k, v in item.items() if k != "role"}
            events.append({"type": role[:64], "turn_index": turn_index, "metadata": details})
    return turns, events
