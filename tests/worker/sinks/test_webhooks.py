"""Signed webhooks: Standard Webhooks signatures (checked against the reference library),
rotation, 410, Retry-After, timeouts, field mapping; the JSONL sink."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import standardwebhooks
from hypothesis import given
from hypothesis import strategies as st

from tests.worker.sinks.receiver import Receiver, serve_receiver
from worker.sinks.errors import DestinationGone, RetryLater, Undeliverable
from worker.sinks.jsonl import append_line
from worker.sinks.webhooks import (
    SignatureError,
    apply_mapping,
    encode_body,
    post_webhook,
    sign,
    signed_headers,
    split_secrets,
    verify,
)

OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_the_signature_is_the_reference_librarys() -> None:
    body = encode_body({"run_id": "r-1", "outputs": {}})
    headers = signed_headers([OLD], "d-1", NOW, body)
    expected = standardwebhooks.Webhook(OLD).sign("d-1", NOW, body.decode())
    assert headers["webhook-signature"] == expected
    assert headers["webhook-timestamp"] == str(int(NOW.timestamp()))


def test_rotation_signs_with_every_secret_and_either_verifies() -> None:
    body = b'{"a":1}'
    headers = signed_headers(split_secrets(f"{OLD}, {NEW}"), "d-1", NOW, body)
    assert len(headers["webhook-signature"].split()) == 2
    verify([OLD], headers, body, NOW)
    verify([NEW], headers, body, NOW)
    with pytest.raises(SignatureError, match="no signature matches"):
        verify(["whsec_" + "A" * 32], headers, body, NOW)


def test_verify_refuses_tampering_and_stale_timestamps() -> None:
    body = b'{"a":1}'
    headers = signed_headers([OLD], "d-1", NOW, body)
    with pytest.raises(SignatureError):
        verify([OLD], headers, b'{"a":2}', NOW)
    with pytest.raises(SignatureError, match="tolerance"):
        verify([OLD], headers, body, NOW + timedelta(minutes=6))
    with pytest.raises(SignatureError, match="missing"):
        verify([OLD], {"webhook-id": "d-1"}, body, NOW)


@given(
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x"]),
        st.text(max_size=300),
    ),
    body=st.binary(max_size=2000),
)
def test_verify_only_ever_raises_signature_error(headers: dict[str, str], body: bytes) -> None:
    try:
        verify([OLD, "plain-secret"], headers, body, NOW)
    except SignatureError:
        return
    pytest.fail("a random header set verified")


def test_a_webhook_id_with_a_dot_is_refused() -> None:
    with pytest.raises(ValueError, match=r"contain '\.'"):
        sign([OLD], "a.b", 1, b"")


def test_delivery_across_a_rotation_is_verified_every_time() -> None:
    receiver = Receiver(secrets=[NEW])  # the receiver already moved to the new secret
    with serve_receiver(receiver) as url:
        for number, secrets in enumerate([[OLD, NEW], [NEW]]):
            body = encode_body({"n": number})
            now = datetime.now(UTC)
            post_webhook(url, body, signed_headers(secrets, f"d-{number}", now, body))
        body = encode_body({"n": "old only"})
        with pytest.raises(Undeliverable, match="401"):
            post_webhook(url, body, signed_headers([OLD], "d-x", datetime.now(UTC), body))
    assert receiver.accepted == {"d-0": 1, "d-1": 1}
    assert receiver.bad_signatures == 1


def test_410_disables_and_429_waits_as_told() -> None:
    answers = iter([(429, {"Retry-After": "30"}), (500, {}), (410, {})])
    receiver = Receiver(secrets=[OLD], answer=lambda _n: next(answers))
    with serve_receiver(receiver) as url:
        body = b"{}"
        with pytest.raises(RetryLater) as raised:
            post_webhook(url, body, signed_headers([OLD], "d-1", datetime.now(UTC), body))
        assert raised.value.retry_after == 30.0
        with pytest.raises(RetryLater):
            post_webhook(url, body, signed_headers([OLD], "d-1", datetime.now(UTC), body))
        with pytest.raises(DestinationGone):
            post_webhook(url, body, signed_headers([OLD], "d-1", datetime.now(UTC), body))
    # The id stayed the same over the retries; the receiver can deduplicate on it.
    assert {h["webhook-id"] for h, _ in receiver.received} == {"d-1"}


def test_a_slow_receiver_times_out_as_retryable() -> None:
    receiver = Receiver(secrets=[OLD], delay_seconds=1.0)
    with serve_receiver(receiver) as url, pytest.raises(RetryLater, match="Timeout"):
        post_webhook(
            url, b"{}", signed_headers([OLD], "d-1", datetime.now(UTC), b"{}"), timeout=0.2
        )


def test_field_mapping_picks_values_from_the_payload() -> None:
    payload = {"run_id": "r", "outputs": {"follow_up": [{"value": {"priority": "high"}}]}}
    mapping = {"id": "{{run_id}}", "p": "{{outputs.follow_up.0.value.priority}}", "k": "fixed"}
    assert apply_mapping(mapping, payload) == {"id": "r", "p": "high", "k": "fixed"}
    assert apply_mapping({"x": "{{nope.deeper}}"}, payload) == {"x": None}


def test_jsonl_appends_one_line_per_delivery(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.jsonl"
    append_line(path, {"delivery_id": "d-1", "text": "line\nbreak"})
    append_line(path, {"delivery_id": "d-2"})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["delivery_id"] for line in lines] == ["d-1", "d-2"]
    with pytest.raises(Undeliverable):
        append_line(tmp_path, {"delivery_id": "d-3"})
