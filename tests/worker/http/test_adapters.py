"""Platform adapters without a server: signatures on raw bytes (good, tampered, stale, rotated
secrets) and each platform's documented payload mapped field by field."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.worker.http.payloads import (
    NOW,
    STANDARD_OLD_SECRET,
    STANDARD_SECRET,
    body_of,
    elevenlabs_headers,
    elevenlabs_payload,
    retell_headers,
    retell_payload,
    standard_headers,
    standard_payload,
    vapi_hmac_headers,
    vapi_payload,
)
from worker.http.adapters import (
    PLATFORMS,
    Ignored,
    Mapped,
    MappingError,
    SignatureError,
    parse_payload,
)

Signer = Callable[..., dict[str, str]]
CASES: dict[str, tuple[Callable[[], dict[str, Any]], Signer, str, str, float]] = {
    # platform: (payload, signer, current secret, previous secret, tolerance seconds)
    "elevenlabs": (elevenlabs_payload, elevenlabs_headers, "wsec_new", "wsec_old", 1800),
    "retell": (retell_payload, retell_headers, "key_new", "key_old", 300),
    "vapi": (vapi_payload, vapi_hmac_headers, "hmac_new", "hmac_old", 300),
    "standard": (standard_payload, standard_headers, STANDARD_SECRET, STANDARD_OLD_SECRET, 300),
}
PLATFORM_NAMES = sorted(CASES)


def verify(platform: str, body: bytes, headers: dict[str, str], secrets: list[str]) -> None:
    PLATFORMS[platform].verify(body, headers, secrets, NOW)


@pytest.mark.parametrize("platform", PLATFORM_NAMES)
def test_signed_body_verifies_with_either_secret_during_rotation(platform: str) -> None:
    payload, sign, new, old, _ = CASES[platform]
    body = body_of(payload())
    verify(platform, body, sign(body, new), [new])
    verify(platform, body, sign(body, new), [old, new])
    verify(platform, body, sign(body, old), [old, new])


@pytest.mark.parametrize("platform", PLATFORM_NAMES)
def test_secret_removed_after_rotation_is_refused(platform: str) -> None:
    payload, sign, new, old, _ = CASES[platform]
    body = body_of(payload())
    with pytest.raises(SignatureError, match="no configured secret"):
        verify(platform, body, sign(body, old), [new])


@pytest.mark.parametrize("platform", PLATFORM_NAMES)
def test_re_serialised_or_tampered_body_is_refused(platform: str) -> None:
    payload, sign, new, _, _ = CASES[platform]
    body = body_of(payload())
    headers = sign(body, new)
    pretty = json.dumps(json.loads(body), indent=2).encode()  # same JSON, other bytes
    with pytest.raises(SignatureError):
        verify(platform, pretty, headers, [new])
    with pytest.raises(SignatureError):
        verify(platform, body[:-1] + b',"injected":1}', headers, [new])


@pytest.mark.parametrize("platform", PLATFORM_NAMES)
def test_stale_timestamp_is_refused_and_one_within_tolerance_accepted(platform: str) -> None:
    payload, sign, new, _, tolerance = CASES[platform]
    body = body_of(payload())
    verify(platform, body, sign(body, new, at=NOW - tolerance + 5), [new])
    with pytest.raises(SignatureError, match="older than"):
        verify(platform, body, sign(body, new, at=NOW - tolerance - 5), [new])


@pytest.mark.parametrize("platform", PLATFORM_NAMES)
def test_missing_signature_and_missing_secrets_are_refused(platform: str) -> None:
    payload, sign, new, _, _ = CASES[platform]
    body = body_of(payload())
    with pytest.raises(SignatureError):
        verify(platform, body, {}, [new])
    with pytest.raises(SignatureError, match="no secret"):
        verify(platform, body, sign(body, new), [])


def test_signature_errors_never_show_the_secret() -> None:
    body = body_of(retell_payload())
    with pytest.raises(SignatureError) as info:
        verify("retell", body, retell_headers(body, "key_old"), ["key_secret_value"])
    assert "key_secret_value" not in str(info.value)
    assert "key_old" not in str(info.value)


def test_vapi_token_modes() -> None:
    body = body_of(vapi_payload())
    verify("vapi", body, {"X-Vapi-Secret": "tok_2"}, ["tok_1", "tok_2"])
    verify("vapi", body, {"Authorization": "Bearer tok_1"}, ["tok_1", "tok_2"])
    with pytest.raises(SignatureError, match="not a configured secret"):
        verify("vapi", body, {"X-Vapi-Secret": "tok_3"}, ["tok_1", "tok_2"])


def test_vapi_hmac_accepts_a_millisecond_timestamp() -> None:
    body = body_of(vapi_payload())
    headers = vapi_hmac_headers(body, "s")
    millis = str(int(NOW * 1000))
    import hashlib
    import hmac

    headers = {
        "x-timestamp": millis,
        "x-signature": hmac.new(b"s", millis.encode() + b"." + body, hashlib.sha256).hexdigest(),
    }
    verify("vapi", body, headers, ["s"])


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def mapped(platform: str, payload: Any, headers: dict[str, str] | None = None) -> Mapped:
    result = parse_payload(platform, payload, headers or {}, tenant="acme")
    assert isinstance(result, Mapped)
    return result


def test_elevenlabs_mapping_field_by_field() -> None:
    result = mapped("elevenlabs", elevenlabs_payload())
    c = result.conversation
    assert result.event_id == "conv_01jx:post_call_transcription"
    assert result.event_type == "post_call_transcription"
    assert (c.conversation_id, c.tenant_id, c.agent_id) == ("conv_01jx", "acme", "agent_7b2")
    assert c.agent_version == "agtvrsn_3"
    assert c.channel == "voice"
    assert c.started_at == at(1_794_999_000)
    assert c.ended_at == at(1_794_999_072)
    assert c.outcome == "success"
    assert c.termination_reason == "end_call tool was called."
    assert [(t.role, t.text) for t in c.turns] == [
        ("agent", "Hi, how can I help?"),
        ("user", "Where is my order 4411?"),
        ("agent", ""),
        ("agent", "It has shipped."),
    ]
    assert [t.at for t in c.turns] == [at(1_794_999_000 + s) for s in (0, 4, 7, 9)]
    [event] = c.events
    assert event.type == "tool_call"
    assert event.name == "order_lookup"
    assert event.arguments == {"order_id": "4411"}
    assert event.result == {"status": "shipped"}
    assert event.succeeded is True
    assert event.duration_ms == 342
    assert event.turn_index == 2
    assert event.at == at(1_794_999_007)
    assert c.dynamic_variables == {"customer_name": "Ann", "system__agent_turns": 3}
    assert c.metadata["analysis"]["transcript_summary"] == "Customer asked about an order."
    assert c.metadata["platform"] == "elevenlabs"


def test_retell_mapping_field_by_field() -> None:
    result = mapped("retell", retell_payload())
    c = result.conversation
    assert result.event_id == "call_a1b2:call_analyzed"
    assert (c.conversation_id, c.tenant_id) == ("call_a1b2", "acme")
    assert (c.agent_id, c.agent_version) == ("oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD", "4")
    assert c.channel == "voice"
    assert c.started_at == at(1_794_999_000)
    assert c.ended_at == at(1_794_999_060.5)
    assert c.outcome == "successful"
    assert c.termination_reason == "user_hangup"
    assert [(t.role, t.text) for t in c.turns] == [
        ("agent", "hi how are you doing?"),
        ("user", "Where is order 4411?"),
        ("agent", "It shipped yesterday."),
    ]
    assert [t.at for t in c.turns] == [at(1_794_999_000 + s) for s in (0.7, 3.0, 6.25)]
    [event] = c.events
    assert (event.type, event.name, event.turn_index) == ("tool_call", "order_lookup", 1)
    assert event.arguments == {"order_id": "4411"}
    assert event.result == {"status": "shipped"}
    assert event.succeeded is True
    assert c.dynamic_variables == {"customer_name": "John Doe", "order_id": "4411"}
    assert c.metadata["call_analysis"]["user_sentiment"] == "Positive"
    assert c.metadata["call_metadata"] == {"crm_id": "42"}


def test_retell_call_ended_is_ignored_unless_listed() -> None:
    payload = retell_payload(event="call_ended")
    ignored = parse_payload("retell", payload, {}, tenant="acme")
    assert ignored == Ignored("call_ended")
    listed = parse_payload(
        "retell", payload, {}, tenant="acme", events=frozenset({"call_ended", "call_analyzed"})
    )
    assert isinstance(listed, Mapped)
    assert listed.event_id == "call_a1b2:call_ended"


def test_vapi_mapping_field_by_field() -> None:
    result = mapped("vapi", vapi_payload())
    c = result.conversation
    start = 1_794_999_000
    assert result.event_id == "c9a1-vapi:end-of-call-report"
    assert (c.conversation_id, c.agent_id, c.channel) == ("c9a1-vapi", "asst_55", "voice")
    assert c.started_at == datetime(2026, 11, 18, 6, 50, tzinfo=UTC)
    assert c.ended_at == datetime(2026, 11, 18, 6, 51, 30, tzinfo=UTC)
    assert c.outcome == "true"
    assert c.termination_reason == "customer-ended-call"
    assert [(t.role, t.text) for t in c.turns] == [
        ("system", "You are a booking agent."),
        ("agent", "Hello, this is Ada."),
        ("user", "Cancel booking B-7."),
        ("agent", "Your booking is cancelled."),
    ]
    assert [t.at for t in c.turns] == [at(start + s) for s in (0, 1, 4, 7)]
    [event] = c.events
    assert (event.type, event.name, event.turn_index) == ("tool_call", "cancel_booking", 2)
    assert event.arguments == {"booking_id": "B-7"}
    assert event.result == "cancelled"
    assert event.at == at(start + 6)
    assert c.dynamic_variables == {"customer_name": "Ann", "booking_id": "B-7"}
    assert c.metadata["analysis"]["structuredData"] == {"booking": "B-7"}


def test_vapi_other_message_types_are_ignored() -> None:
    assert parse_payload("vapi", vapi_payload(kind="status-update"), {}, tenant="t") == Ignored(
        "status-update"
    )


def test_standard_mapping_uses_the_webhook_id_and_the_source_tenant() -> None:
    result = mapped("standard", standard_payload(), {"Webhook-Id": "msg_77"})
    c = result.conversation
    assert result.event_id == "msg_77:conversation"
    assert c.tenant_id == "acme"
    assert c.outcome == "Complete"
    assert c.started_at == datetime(2026, 11, 18, 6, 50, 1, tzinfo=UTC)
    with pytest.raises(MappingError, match="tenant_id"):
        parse_payload("standard", {**standard_payload(), "tenant_id": "other"}, {}, tenant="acme")


@pytest.mark.parametrize(
    ("platform", "payload", "field"),
    [
        ("elevenlabs", {"type": "post_call_transcription"}, "data"),
        (
            "elevenlabs",
            {"type": "post_call_transcription", "data": {"transcript": []}},
            "data.conversation_id",
        ),
        ("retell", {"event": "call_analyzed", "call": {"call_id": 5}}, "call.call_id"),
        ("retell", {"call": {}}, "event"),
        ("vapi", {"message": {"type": "end-of-call-report", "call": {}}}, "message.call.id"),
        ("vapi", [], "body"),
        ("standard", {"turns": []}, "conversation_id"),
    ],
)
def test_payload_that_does_not_map_names_the_field(platform: str, payload: Any, field: str) -> None:
    with pytest.raises(MappingError) as info:
        parse_payload(platform, payload, {}, tenant="acme")
    assert info.value.field == field


def test_an_offset_past_the_end_of_time_names_the_field() -> None:
    """Found by the fuzz below: a turn 1e300 seconds into the call overflowed `datetime` and
    escaped as an OverflowError instead of naming the field."""
    payload = elevenlabs_payload()
    payload["data"]["transcript"][0]["time_in_call_secs"] = 1e300
    with pytest.raises(MappingError) as info:
        parse_payload("elevenlabs", payload, {}, tenant="acme")
    assert info.value.field == "data.transcript.0.time_in_call_secs"

    payload = elevenlabs_payload()
    payload["data"]["metadata"]["call_duration_secs"] = 1e300
    with pytest.raises(MappingError) as info:
        parse_payload("elevenlabs", payload, {}, tenant="acme")
    assert info.value.field == "data.metadata.call_duration_secs"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


def mutated(payload: Any, draw: Any) -> Any:
    """The documented payload with one value somewhere replaced by arbitrary JSON."""
    if isinstance(payload, dict) and payload and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(payload)))
        return {**payload, key: mutated(payload[key], draw)}
    if isinstance(payload, list) and payload and draw(st.booleans()):
        index = draw(st.integers(0, len(payload) - 1))
        return [*payload[:index], mutated(payload[index], draw), *payload[index + 1 :]]
    return draw(json_values)


@pytest.mark.parametrize("platform", PLATFORM_NAMES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fuzzed_payloads_map_or_name_a_field(platform: str, data: st.DataObject) -> None:
    """Any JSON near the documented shape maps, is ignored, or raises MappingError: never
    another exception."""
    payload = mutated(CASES[platform][0](), data.draw)
    result: Mapped | Ignored | MappingError
    try:
        result = parse_payload(platform, payload, {"webhook-id": "m"}, tenant="acme")
    except MappingError as exc:
        result = exc
    if isinstance(result, MappingError):
        assert result.field
    else:
        assert isinstance(result, Mapped | Ignored)


@pytest.mark.parametrize("platform", PLATFORM_NAMES)
@settings(max_examples=100, deadline=None)
@given(
    body=st.binary(max_size=200),
    headers=st.dictionaries(st.text(max_size=20), st.text(max_size=80), max_size=4),
)
def test_fuzzed_signatures_only_raise_signature_error(
    platform: str, body: bytes, headers: dict[str, str]
) -> None:
    with pytest.raises(SignatureError):
        verify(platform, body, headers, [CASES[platform][2]])
