"""Webhook payloads shaped as each platform documents them, and signing as each platform signs
(mirroring the platforms' own SDK code: elevenlabs-python `construct_event`, retell-python-sdk
`webhook_auth.sign`, Vapi's HMAC credential plan defaults, and the `standardwebhooks` package)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

NOW = 1_795_000_000.0  # 2026-11-18, the clock the tests verify at
STANDARD_SECRET = "whsec_" + base64.b64encode(b"posthoc-standard-test-key-32byte").decode()
STANDARD_OLD_SECRET = "whsec_" + base64.b64encode(b"posthoc-standard-old-key-32bytes").decode()


def body_of(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def elevenlabs_payload(conversation_id: str = "conv_01jx") -> dict[str, Any]:
    return {
        "type": "post_call_transcription",
        "event_timestamp": 1_794_999_990,
        "data": {
            "agent_id": "agent_7b2",
            "conversation_id": conversation_id,
            "status": "done",
            "version_id": "agtvrsn_3",
            "transcript": [
                {"role": "agent", "message": "Hi, how can I help?", "time_in_call_secs": 0},
                {
                    "role": "user",
                    "message": "Where is my order 4411?",
                    "time_in_call_secs": 4,
                },
                {
                    "role": "agent",
                    "message": None,
                    "time_in_call_secs": 7,
                    "tool_calls": [
                        {
                            "type": "webhook",
                            "request_id": "req_1",
                            "tool_name": "order_lookup",
                            "params_as_json": '{"order_id": "4411"}',
                            "tool_has_been_called": True,
                        }
                    ],
                    "tool_results": [
                        {
                            "type": "webhook",
                            "request_id": "req_1",
                            "tool_name": "order_lookup",
                            "result_value": '{"status": "shipped"}',
                            "is_error": False,
                            "tool_has_been_called": True,
                            "tool_latency_secs": 0.342,
                        }
                    ],
                },
                {"role": "agent", "message": "It has shipped.", "time_in_call_secs": 9},
            ],
            "metadata": {
                "start_time_unix_secs": 1_794_999_000,
                "call_duration_secs": 72,
                "termination_reason": "end_call tool was called.",
            },
            "analysis": {
                "call_successful": "success",
                "transcript_summary": "Customer asked about an order.",
                "evaluation_criteria_results": {},
                "data_collection_results": {},
            },
            "conversation_initiation_client_data": {
                "dynamic_variables": {"customer_name": "Ann", "system__agent_turns": 3}
            },
        },
    }


def elevenlabs_headers(body: bytes, secret: str, at: float = NOW) -> dict[str, str]:
    timestamp = str(int(at))
    digest = hmac.new(secret.encode(), f"{timestamp}.{body.decode()}".encode(), hashlib.sha256)
    return {"ElevenLabs-Signature": f"t={timestamp},v0={digest.hexdigest()}"}


def retell_payload(call_id: str = "call_a1b2", event: str = "call_analyzed") -> dict[str, Any]:
    """`call_ended` carries every call field except `call_analysis` (Retell's webhook docs)."""
    payload = _retell_call_analyzed(call_id, event)
    if event == "call_ended":
        del payload["call"]["call_analysis"]
    return payload


def _retell_call_analyzed(call_id: str, event: str) -> dict[str, Any]:
    return {
        "event": event,
        "call": {
            "call_type": "phone_call",
            "from_number": "+12137771234",
            "to_number": "+12137771235",
            "direction": "inbound",
            "call_id": call_id,
            "agent_id": "oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD",
            "agent_version": 4,
            "call_status": "ended",
            "metadata": {"crm_id": "42"},
            "retell_llm_dynamic_variables": {"customer_name": "John Doe"},
            "collected_dynamic_variables": {"order_id": "4411"},
            "start_timestamp": 1_794_999_000_000,
            "end_timestamp": 1_794_999_060_500,
            "disconnection_reason": "user_hangup",
            "transcript": "Agent: hi how are you doing?\nUser: Doing pretty well.",
            "transcript_with_tool_calls": [
                {
                    "role": "agent",
                    "content": "hi how are you doing?",
                    "words": [{"word": "hi", "start": 0.7, "end": 1.3}],
                },
                {
                    "role": "user",
                    "content": "Where is order 4411?",
                    "words": [{"word": "Where", "start": 3.0, "end": 3.4}],
                },
                {
                    "role": "tool_call_invocation",
                    "tool_call_id": "tc_9",
                    "name": "order_lookup",
                    "arguments": '{"order_id":"4411"}',
                },
                {
                    "role": "tool_call_result",
                    "tool_call_id": "tc_9",
                    "content": '{"status":"shipped"}',
                    "successful": True,
                },
                {
                    "role": "agent",
                    "content": "It shipped yesterday.",
                    "words": [{"word": "It", "start": 6.25, "end": 6.5}],
                },
            ],
            "call_analysis": {
                "call_summary": "The customer asked about an order.",
                "in_voicemail": False,
                "user_sentiment": "Positive",
                "call_successful": True,
                "custom_analysis_data": {},
            },
        },
    }


def retell_headers(body: bytes, api_key: str, at: float = NOW) -> dict[str, str]:
    millis = str(int(at * 1000))
    digest = hmac.new(api_key.encode(), body + millis.encode(), hashlib.sha256).hexdigest()
    return {"x-retell-signature": f"v={millis},d={digest}"}


def vapi_payload(call_id: str = "c9a1-vapi", kind: str = "end-of-call-report") -> dict[str, Any]:
    start = 1_794_999_000_000
    return {
        "message": {
            "type": kind,
            "endedReason": "customer-ended-call",
            "startedAt": "2026-11-18T06:50:00.000Z",
            "endedAt": "2026-11-18T06:51:30.000Z",
            "timestamp": start + 91_000,
            "cost": 0.12,
            "call": {
                "id": call_id,
                "orgId": "org_1",
                "type": "inboundPhoneCall",
                "assistantId": "asst_55",
                "assistantOverrides": {"variableValues": {"customer_name": "Ann"}},
            },
            "artifact": {
                "transcript": "AI: Hello\nUser: Cancel my booking",
                "recordingUrl": "https://storage.vapi.ai/r.wav",
                "messages": [
                    {
                        "role": "system",
                        "message": "You are a booking agent.",
                        "time": start,
                        "secondsFromStart": 0,
                    },
                    {
                        "role": "bot",
                        "message": "Hello, this is Ada.",
                        "time": start + 1_000,
                        "endTime": start + 2_000,
                        "secondsFromStart": 1,
                    },
                    {
                        "role": "user",
                        "message": "Cancel booking B-7.",
                        "time": start + 4_000,
                        "endTime": start + 5_000,
                        "secondsFromStart": 4,
                    },
                    {
                        "role": "tool_calls",
                        "message": "",
                        "time": start + 6_000,
                        "secondsFromStart": 6,
                        "toolCalls": [
                            {
                                "id": "call_T1",
                                "type": "function",
                                "function": {
                                    "name": "cancel_booking",
                                    "arguments": '{"booking_id": "B-7"}',
                                },
                            }
                        ],
                    },
                    {
                        "role": "tool_call_result",
                        "toolCallId": "call_T1",
                        "name": "cancel_booking",
                        "result": "cancelled",
                        "time": start + 6_500,
                        "secondsFromStart": 6.5,
                    },
                    {
                        "role": "bot",
                        "message": "Your booking is cancelled.",
                        "time": start + 7_000,
                        "secondsFromStart": 7,
                    },
                ],
                "variableValues": {"booking_id": "B-7"},
            },
            "analysis": {
                "summary": "Booking cancelled.",
                "structuredData": {"booking": "B-7"},
                "successEvaluation": "true",
            },
        }
    }


def vapi_hmac_headers(body: bytes, secret: str, at: float = NOW) -> dict[str, str]:
    stamp = str(int(at))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"x-signature": digest, "x-timestamp": stamp}


def standard_payload(conversation_id: str = "c-standard") -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "outcome": "Complete",
        "turns": [
            {"role": "user", "text": "hello", "at": "2026-11-18T06:50:01Z"},
            {"role": "agent", "text": "hi", "at": "2026-11-18T06:50:03Z"},
        ],
    }


def standard_headers(
    body: bytes, secret: str, msg_id: str = "msg_1", at: float = NOW
) -> dict[str, str]:
    sent = datetime.fromtimestamp(int(at), tz=UTC)
    signature = Webhook(secret).sign(msg_id, sent, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at)),
        "webhook-signature": signature,
    }
