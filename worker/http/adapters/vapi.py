"""Vapi server messages (`end-of-call-report`).

Shape (VapiAI server SDK `ServerMessageEndOfCallReport`, `Artifact`, `UserMessage`,
`BotMessage`, `ToolCallMessage`, `ToolCallResultMessage`, and the end-of-call-report docs): the
body is `{"message": {...}}` with `type`, `endedReason`, `startedAt`/`endedAt` (ISO 8601),
`call` (`id`, `assistantId`, `type`, `assistantOverrides.variableValues`), `artifact`
(`messages`: `role` user/bot/system with `message`, `time` in Unix ms and `secondsFromStart`;
`tool_calls` with `toolCalls` [`id`, `function.name`, `function.arguments`]; `tool_call_result`
with `toolCallId`, `name`, `result`; and `variableValues`) and `analysis` (`summary`,
`structuredData`, `successEvaluation`).

Authentication (Vapi server authentication docs): either the HMAC credential plan's defaults,
`x-signature: <hex HMAC-SHA256(secret, "<x-timestamp>.<raw body>")>` with `x-timestamp`
(seconds or milliseconds, refused when more than 5 minutes away), or the secret as a token in
`X-Vapi-Secret` or `Authorization: Bearer <secret>`, compared in constant time.
"""

from __future__ import annotations

import hmac
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
    unix_seconds,
)

TOLERANCE_SECONDS = 5 * 60
DEFAULT_EVENTS = frozenset({"end-of-call-report"})
_SPEAKERS = {"user": "user", "bot": "agent", "assistant": "agent", "system": "system"}
_CHANNELS = {"inboundPhoneCall": "voice", "outboundPhoneCall": "voice", "webCall": "voice"}


def verify(body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: float) -> None:
    """Raise SignatureError unless the HMAC plan's signature or the token matches a secret."""
    require_secrets(secrets)
    lowered = lower_headers(headers)
    signature = lowered.get("x-signature")
    if signature is not None:
        stamp = lowered.get("x-timestamp", "")
        if not stamp.isdigit():
            raise SignatureError("x-signature needs a numeric x-timestamp header")
        sent = int(stamp) / 1000 if len(stamp) > 11 else int(stamp)
        check_fresh(sent, now, TOLERANCE_SECONDS, future=True)
        message = stamp.encode() + b"." + body
        if not any_secret_matches(secrets, message, [signature.strip().lower()]):
            raise SignatureError("no configured secret produced this signature")
        return
    token = lowered.get("x-vapi-secret")
    authorization = lowered.get("authorization", "")
    if token is None and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    if not token:
        raise SignatureError("neither x-signature, X-Vapi-Secret nor a Bearer token was sent")
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(secret.encode(), token.encode("utf-8", "replace"))
    if not matched:
        raise SignatureError("the token is not a configured secret")


def parse(payload: Any, *, tenant: str, events: frozenset[str]) -> Mapped | Ignored:
    """Map an end-of-call report to a conversation; other message types are ignored."""
    message = field(payload, "message", dict)
    event_type = field(message, "type", str, where="message")
    if event_type not in events:
        return Ignored(event_type)
    call = field(message, "call", dict, where="message")
    call_id = field(call, "id", str, where="message.call")
    artifact = field(message, "artifact", dict, required=False, where="message") or {}
    turns, tool_events = _messages(
        field(artifact, "messages", list, required=False, where="message.artifact") or []
    )
    overrides = field(call, "assistantOverrides", dict, required=False, where="message.call") or {}
    variables = {
        **(
            field(
                overrides,
                "variableValues",
                dict,
                required=False,
                where="message.call.assistantOverrides",
            )
            or {}
        ),
        **(field(artifact, "variableValues", dict, required=False, where="message.artifact") or {}),
    }
    analysis = field(message, "analysis", dict, required=False, where="message")
    success = (analysis or {}).get("successEvaluation")
    conversation = build_conversation(
        {
            "conversation_id": call_id,
            "tenant_id": tenant,
            "agent_id": field(call, "assistantId", str, required=False, where="message.call"),
            "channel": _CHANNELS.get(str(call.get("type")), "other"),
            "started_at": _iso(message, "startedAt", "message")
            or _iso(call, "startedAt", "message.call"),
            "ended_at": _iso(message, "endedAt", "message")
            or _iso(call, "endedAt", "message.call"),
            "outcome": str(success)[:100] if success not in (None, "") else "unknown",
            "termination_reason": field(
                message, "endedReason", str, required=False, where="message"
            ),
            "turns": turns,
            "events": tool_events,
            "dynamic_variables": variables,
            "metadata": {
                "platform": "vapi",
                "analysis": analysis,
                "cost": message.get("cost"),
                "recording_url": artifact.get("recordingUrl"),
            },
        },
        field_prefix="conversation.",
    )
    return Mapped(conversation, f"{call_id}:{event_type}", event_type)


def _iso(data: dict[str, Any], name: str, where: str) -> str | None:
    value: str | None = field(data, name, str, required=False, where=where)
    if value is not None:
        try:
            datetime.fromisoformat(value)
        except ValueError as exc:
            raise MappingError(f"{where}.{name}", "is not an ISO 8601 time") from exc
    return value


def _messages(items: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Spoken messages become turns (timed by `time`, Unix ms); each tool call becomes an event
    at the last turn before it, completed by the result with the same `toolCallId`."""
    turns: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    calls: dict[str, dict[str, Any]] = {}
    for position, item in enumerate(items):
        where = f"message.artifact.messages.{position}"
        if not isinstance(item, dict):
            raise MappingError(where, "must be an object")
        role = field(item, "role", str, where=where)
        time_ms = field(item, "time", (int, float), required=False, where=where)
        at = None if time_ms is None else unix_seconds(time_ms / 1000, f"{where}.time")
        turn_index = len(turns) - 1 if turns else None
        if role in _SPEAKERS:
            seconds = item.get("secondsFromStart")
            turns.append(
                {
                    "role": _SPEAKERS[role],
                    "text": field(item, "message", str, required=False, where=where) or "",
                    "at": at,
                    "metadata": {"seconds_from_start": seconds} if seconds is not None else {},
                }
            )
        elif role == "tool_calls":
            for number, call in enumerate(
                field(item, "toolCalls", list, required=False, where=where) or []
            ):
                call_where = f"{where}.toolCalls.{number}"
                if not isinstance(call, dict):
                    raise MappingError(call_where, "must be an object")
                function = field(call, "function", dict, where="message.call")
                event = {
                    "type": "tool_call",
                    "name": field(function, "name", str, where=f"{call_where}.function"),
                    "arguments": json_arguments(function.get("arguments")),
                    "at": at,
                    "turn_index": turn_index,
                    "metadata": {"tool_call_id": call.get("id")},
                }
                events.append(event)
                if isinstance(call.get("id"), str):
                    calls[call["id"]] = event
        elif role == "tool_call_result":
            known = calls.get(field(item, "toolCallId", str, where=where))
            if known is not None:
                event = known
            else:
                event = {
                    "type": "tool_call",
                    "name": field(item, "name", str, required=False, where=where),
                    "at": at,
                    "turn_index": turn_index,
                    "metadata": {"tool_call_id": item["toolCallId"]},
                }
                events.append(event)
            event["result"] = json_result(item.get("result"))
        else:
            raise MappingError(f"{where}.role", f"is not a known message role: {role[:40]!r}")
    return turns, events
