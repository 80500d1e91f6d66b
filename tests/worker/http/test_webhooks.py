"""`POST /v1/webhooks/{source}` over real HTTP for every platform: signed 202, duplicate 200
without new runs, bad / stale / rotated-out signatures 401, malformed 400 and 422 naming the
field, 413 while reading, and the delivery log (no transcript text, no secrets)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from tests.worker.http.conftest import Enqueued
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
from tests.worker.http.server import Server
from worker.http import store
from worker.ledger import Ledger
from worker.ledger.tables import analysis_runs, webhook_deliveries

Signer = Callable[..., dict[str, str]]
# source: (payload, signer, secret, a secret not (or no longer) configured, tolerance)
PLATFORMS: dict[str, tuple[Callable[[], dict[str, Any]], Signer, str, str, float]] = {
    "el": (elevenlabs_payload, elevenlabs_headers, "wsec_new", "wsec_old", 1800),
    "rt": (retell_payload, retell_headers, "key_new", "key_removed", 300),
    "vp": (vapi_payload, vapi_hmac_headers, "hmac_new", "hmac_old", 300),
    "std": (standard_payload, standard_headers, STANDARD_SECRET, "whsec_" + "QUJD" * 8, 300),
}
SOURCES = sorted(PLATFORMS)
TRANSCRIPT_WORDS = ("4411", "Cancel booking", "hello", "shipped")


def post(server: Server, source: str, body: bytes, headers: dict[str, str]) -> Any:
    return server.request("POST", f"/v1/webhooks/{source}", body, headers)


def run_count(ledger: Ledger) -> int:
    with ledger.engine.connect() as connection:
        return int(
            connection.execute(sa.select(sa.func.count()).select_from(analysis_runs)).scalar_one()
        )


@pytest.mark.parametrize("source", SOURCES)
def test_signed_delivery_202_then_duplicate_200_without_new_runs(
    source: str, server: Server, ledger: Ledger, enqueued: Enqueued
) -> None:
    payload, sign, secret, _, _ = PLATFORMS[source]
    body = body_of(payload())
    first = post(server, source, body, sign(body, secret))
    assert first.status == 202, first.body
    assert first.body["run_ids"]
    assert run_count(ledger) == len(first.body["run_ids"])
    queued = list(enqueued)
    assert set(queued) <= set(first.body["run_ids"])

    again = post(server, source, body, sign(body, secret))
    assert again.status == 200
    assert again.body == first.body
    assert run_count(ledger) == len(first.body["run_ids"])
    assert list(enqueued) == queued  # nothing new on the queue

    log = store.list_deliveries(ledger, source=source)
    assert [d.outcome for d in log] == ["duplicate", "accepted"]
    assert all(d.signature == "valid" for d in log)
    assert log[1].run_ids == first.body["run_ids"]


@pytest.mark.parametrize("source", SOURCES)
def test_bad_stale_and_rotated_out_signatures_answer_401(
    source: str, server: Server, ledger: Ledger
) -> None:
    payload, sign, secret, removed, tolerance = PLATFORMS[source]
    body = body_of(payload())
    tampered = body[:-1] + b',"x":1}'
    answers = [
        post(server, source, tampered, sign(body, secret)),
        post(server, source, body, sign(body, secret, at=NOW - tolerance - 60)),
        post(server, source, body, sign(body, removed)),
        post(server, source, body, {}),
    ]
    assert [a.status for a in answers] == [401, 401, 401, 401]
    assert all(a.body["error"].startswith("signature: ") for a in answers)
    assert "older than" in answers[1].body["error"]
    assert run_count(ledger) == 0
    log = store.list_deliveries(ledger, source=source, statuses=[401])
    assert len(log) == 4
    assert {d.signature for d in log} == {"invalid"}


def test_the_previous_secret_still_works_while_both_are_configured(server: Server) -> None:
    body = body_of(retell_payload())
    assert post(server, "rt", body, retell_headers(body, "key_old")).status == 202
    other = body_of(standard_payload("c-other"))
    answer = post(server, "std", other, standard_headers(other, STANDARD_OLD_SECRET, "msg_2"))
    assert answer.status == 202


@pytest.mark.parametrize("source", SOURCES)
def test_malformed_body_400_and_unmappable_json_422_naming_the_field(
    source: str, server: Server, ledger: Ledger
) -> None:
    _, sign, secret, _, _ = PLATFORMS[source]
    not_json = b'{"conversation_id": '
    answer = post(server, source, not_json, sign(not_json, secret))
    assert answer.status == 400
    assert answer.body["error"].startswith("body: is not JSON")

    unmappable = {
        "el": {
            "type": "post_call_transcription",
            "data": {"conversation_id": "c", "transcript": 5},
        },
        "rt": {"event": "call_analyzed", "call": {"call_id": "c", "start_timestamp": "soon"}},
        "vp": {"message": {"type": "end-of-call-report", "call": {"id": 7}}},
        "std": {"conversation_id": "c", "turns": [{"role": "robot", "text": "x"}]},
    }[source]
    expected_field = {
        "el": "data.transcript",
        "rt": "call.start_timestamp",
        "vp": "message.call.id",
        "std": "turns.0.role",
    }[source]
    body = body_of(unmappable)
    answer = post(server, source, body, sign(body, secret))
    assert answer.status == 422, answer.body
    assert answer.body["field"] == expected_field
    assert answer.body["error"].startswith(expected_field + ": ")
    assert run_count(ledger) == 0


def test_ignored_event_type_answers_200_and_is_logged(server: Server, ledger: Ledger) -> None:
    body = body_of(retell_payload(event="call_ended"))
    answer = post(server, "rt", body, retell_headers(body, "key_new"))
    assert answer.status == 200
    assert answer.body == {"run_ids": [], "ignored": "call_ended"}
    assert run_count(ledger) == 0
    [entry] = store.list_deliveries(ledger, source="rt")
    assert (entry.outcome, entry.event_type) == ("ignored", "call_ended")


def test_listed_call_ended_and_call_analyzed_are_separate_events(server: Server) -> None:
    ended = body_of(retell_payload(event="call_ended"))
    analyzed = body_of(retell_payload(event="call_analyzed"))
    assert post(server, "rt-ended", ended, retell_headers(ended, "key_new")).status == 202
    assert post(server, "rt-ended", analyzed, retell_headers(analyzed, "key_new")).status == 202


def test_vapi_token_source(server: Server) -> None:
    body = body_of(vapi_payload())
    assert post(server, "vp-token", body, {"X-Vapi-Secret": "tok_1"}).status == 202
    assert post(server, "vp-token", body, {"Authorization": "Bearer tok_9"}).status == 401


def test_body_above_the_limit_is_413_and_unknown_source_404(server: Server, ledger: Ledger) -> None:
    big = b'{"pad": "' + b"x" * (64 * 1024) + b'"}'
    answer = post(server, "el", big, elevenlabs_headers(big, "wsec_new"))
    assert answer.status == 413
    assert answer.body["error"].startswith("body: larger than")
    assert post(server, "nope", b"{}", {}).status == 404
    [entry] = store.list_deliveries(ledger, source="el")
    assert (entry.status_code, entry.outcome) == (413, "too_large")


def test_delivery_log_holds_neither_transcript_nor_secrets(server: Server, ledger: Ledger) -> None:
    for source in SOURCES:
        payload, sign, secret, removed, _ = PLATFORMS[source]
        body = body_of(payload())
        post(server, source, body, sign(body, secret))
        post(server, source, body, sign(body, removed))
    with ledger.engine.connect() as connection:
        rows = connection.execute(sa.select(webhook_deliveries)).mappings().all()
    assert len(rows) == 2 * len(SOURCES)
    text = json.dumps([dict(r) for r in rows], default=str)
    for secret in ("wsec_new", "key_new", "hmac_new", STANDARD_SECRET, "wsec_old", "key_removed"):
        assert secret not in text
    for words in TRANSCRIPT_WORDS:
        assert words not in text


def test_webhook_conversation_is_stored_under_the_source_tenant(
    server: Server, ledger: Ledger
) -> None:
    body = body_of(standard_payload("c-tenant"))
    assert post(server, "std", body, standard_headers(body, STANDARD_SECRET, "m9")).status == 202
    found = store.find_conversation(ledger, "beta", "c-tenant")
    assert found is not None
    assert found[1].started_at == datetime(2026, 11, 18, 6, 50, 1, tzinfo=UTC)
    assert store.find_conversation(ledger, "default", "c-tenant") is None
