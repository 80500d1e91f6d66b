"""ElevenLabs Agents post-call webhooks (`post_call_transcription`).

Shape (elevenlabs-python `GetConversationResponseModel`, and the post-call webhook docs): the
body is `{"type", "event_timestamp", "data"}`; `data` has `conversation_id`, `agent_id`,
`status`, `transcript` (items with `role` user/agent, `message`, `time_in_call_secs`,
`tool_calls` [`request_id`, `tool_name`, `params_as_json`] and `tool_results` [`request_id`,
`tool_name`, `result_value`, `is_error`, `tool_latency_secs`]), `metadata`
(`start_time_unix_secs`, `call_duration_secs`, `termination_reason`), `analysis`
(`call_successful`, `transcript_summary`, `evaluation_criteria_results`,
`data_collection_results`) and `conversation_initiation_client_data.dynamic_variables`.

Signature (elevenlabs-python `webhooks_custom.construct_event`): header
`ElevenLabs-Signature: t=<unix seconds>,v0=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`,
refused when older than 30 minutes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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

SIGNATURE_HEADER = "elevenlabs-signature"
TOLERANCE_SECONDS = 30 * 60
DEFAULT_EVENTS = frozenset({"post_call_transcription"})
_ROLES = {"user": "user", "agent": "agent"}


def verify(body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: float) -> None:
    """Raise SignatureError unless `body` is signed by one of `secrets` within 30 minutes."""
    require_secrets(secrets)
    header = lower_headers(headers).get(SIGNATURE_HEADER)
    if not header:
        raise SignatureError("the ElevenLabs-Signature header is missing")
    timestamp: str | None = None
    given: list[str] = []
    for raw_part in header.split(","):
        part = raw_part.strip()
        if part.startswith("t="):
            timestamp = part[2:]
        elif part.startswith("v0="):
            given.append(part)
    if timestamp is None or not timestamp.isdigit() or not given:
        raise SignatureError("the ElevenLabs-Signature header has no t= and v0= parts")
    check_fresh(int(timestamp), now, TOLERANCE_SECONDS, future=False)
    message = timestamp.encode() + b"." + body
    if not any_secret_matches(secrets, message, given, prefix="v0="):
        raise SignatureError("no configured secret produced this signature")


def parse(payload: Any, *, tenant: str, events: frozenset[str]) -> Mapped | Ignored:
    """Map a post-call webhook to a conversation; other event types are ignored."""
    event_type = field(payload, "type", str)
    if event_type not in events:
        return Ignored(event_type)
    data = field(payload, "data", dict)
    conversation_id = field(data, "conversation_id", str, where="data")
    meta = field(data, "metadata", dict, required=False, where="data") or {}
    start_secs = field(
        meta, "start_time_unix_secs", (int, float), required=False, where="data.metadata"
    )
    duration = field(
        meta, "call_duration_secs", (int, float), required=False, where="data.metadata"
    )
    started_at = (
        unix_seconds(start_secs, "data.metadata.start_time_unix_secs") if start_secs else None
    )
    turns, tool_events = _turns_and_tools(field(data, "transcript", list, where="data"), started_at)
    initiation = (
        field(data, "conversation_initiation_client_data", dict, required=False, where="data") or {}
    )
    variables = (
        field(
            initiation,
            "dynamic_variables",
            dict,
            required=False,
            where="data.conversation_initiation_client_data",
        )
        or {}
    )
    analysis = field(data, "analysis", dict, required=False, where="data")
    outcome = field(analysis or {}, "call_successful", str, required=False, where="data.analysis")
    conversation = build_conversation(
        {
            "conversation_id": conversation_id,
            "tenant_id": tenant,
            "agent_id": field(data, "agent_id", str, required=False, where="data"),
            "agent_version": field(data, "version_id", str, required=False, where="data"),
            "channel": "voice",
            "started_at": started_at,
            "ended_at": (
                seconds_after(started_at, duration, "data.metadata.call_duration_secs")
                if started_at and duration
                else None
            ),
            "outcome": outcome or "unknown",
            "termination_reason": field(
                meta, "termination_reason", str, required=False, where="data.metadata"
            ),
            "turns": turns,
            "events": tool_events,
            "dynamic_variables": variables,
            "metadata": {
                "platform": "elevenlabs",
                "status": data.get("status"),
                "analysis": analysis,
                "call_duration_secs": duration,
                "event_timestamp": payload.get("event_timestamp"),
            },
        },
        field_prefix="conversation.",
    )
    return Mapped(conversation, f"{conversation_id}:{event_type}", event_type)


def _turns_and_tools(
    transcript: list[Any], started_at: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Turns in order; each tool call becomes an event at the turn that made it, completed by
    the result with the same `request_id` wherever it appears."""
    turns: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    calls: dict[str, dict[str, Any]] = {}
    for position, item in enumerate(transcript):
        where = f"data.transcript.{position}"
        if not isinstance(item, dict):
            raise MappingError(where, "must be an object")
        role = field(item, "role", str, where=where)
        if role not in _ROLES:
            raise MappingError(f"{where}.role", f"must be 'user' or 'agent', got {role!r}")
        offset = field(item, "time_in_call_secs", (int, float), required=False, where=where)
        at = (
            seconds_after(started_at, offset, f"{where}.time_in_call_secs")
            if started_at and offset is not None
            else None
        )
        index = len(turns)
        turns.append(
            {
                "role": _ROLES[role],
                "text": field(item, "message", str, required=False, where=where) or "",
                "at": at,
                "metadata": {"time_in_call_secs": offset} if offset is not None else {},
            }
        )
        for number, call in enumerate(
            field(item, "tool_calls", list, required=False, where=where) or []
        ):
            call_where = f"{where}.tool_calls.{number}"
            if not isinstance(call, dict):
                raise MappingError(call_where, "must be an object")
            event = {
                "type": "tool_call",
                "name": field(call, "tool_name", str, where=call_where),
                "arguments": json_arguments(call.get("params_as_json")),
                "at": at,
                "turn_index": index,
                "metadata": {"request_id": call.get("request_id")},
            }
            events.append(event)
            if isinstance(call.get("request_id"), str):
                calls[call["request_id"]] = event
        for number, result in enumerate(
            field(item, "tool_results", list, required=False, where=where) or []
        ):
            if not isinstance(result, dict):
                raise MappingError(f"{where}.tool_results.{number}", "must be an object")
            known = calls.get(str(result.get("request_id")))
            if known is not None:
                event = known
            else:
                event = {
                    "type": "tool_call",
                    "name": field(result, "tool_name", str, where=f"{where}.tool_results.{number}"),
                    "at": at,
                    "turn_index": index,
                    "metadata": {"request_id": result.get("request_id")},
                }
                events.append(event)
            event["result"] = json_result(result.get("result_value"))
            if isinstance(result.get("is_error"), bool):
                event["succeeded"] = not result["is_error"]
            latency = result.get("tool_latency_secs")
            if isinstance(latency, int | float) and not isinstance(latency, bool) and latency >= 0:
                event["duration_ms"] = round(latency * 1000)
    return turns, events
