"""A Hypothesis fuzz of every operation in the OpenAPI spec over real HTTP: arbitrary JSON, near-
valid conversations, raw bytes, odd path parameters and credentials. No answer is a 5xx, every
answer is one the spec lists, and afterwards everything in the ledger is valid."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.conversation import Conversation
from tests.worker.http.payloads import STANDARD_SECRET, standard_headers
from tests.worker.http.server import Server, serving
from worker.http import store
from worker.http.app import Intake
from worker.http.openapi import openapi_document
from worker.ledger import Ledger
from worker.ledger.tables import analysis_runs, conversations

SPEC = openapi_document()
SLACK_SECRET = "slack-signing-secret-for-the-fuzz"
OPERATIONS = [
    (path, method, operation)
    for path, methods in SPEC["paths"].items()
    for method, operation in methods.items()
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)
turns = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["agent", "user", "system", "bot"]), "text": st.text(max_size=30)},
        optional={
            "at": st.sampled_from(["2026-11-20T10:00:00Z", "2026-11-20T10:00:00", "later", 5])
        },
    ),
    max_size=4,
)
conversations_like = st.fixed_dictionaries(
    {"conversation_id": st.text(max_size=30) | st.integers(), "turns": turns | json_values},
    optional={
        "outcome": st.text(max_size=120),
        "tenant_id": st.sampled_from(["acme", "other", ""]) | st.none(),
        "events": st.lists(
            st.dictionaries(st.sampled_from(["type", "turn_index", "x"]), json_values)
        ),
        "started_at": st.sampled_from(["2026-11-20T10:00:00Z", "2026-11-19T10:00:00Z", "x"]),
        "ended_at": st.sampled_from(["2026-11-20T10:00:00Z", "2026-11-19T10:00:00Z"]),
        "metadata": json_values,
    },
)
slack_forms = st.fixed_dictionaries(
    {"type": st.sampled_from(["block_actions", "view_submission"]) | json_values},
    optional={
        "actions": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "action_id": st.sampled_from(
                        ["posthoc_procedure_approve", "posthoc_procedure_reject", "other"]
                    )
                    | json_values,
                    "value": st.text(max_size=30) | json_values,
                },
            )
            | json_values,
            max_size=2,
        ),
        "user": st.fixed_dictionaries({}, optional={"id": st.text(max_size=12) | json_values})
        | json_values,
    },
).map(lambda p: urlencode({"payload": json.dumps(p)}).encode())
bodies = (
    slack_forms
    | conversations_like.map(lambda c: json.dumps(c).encode())
    | st.lists(conversations_like, max_size=3).map(lambda c: json.dumps(c).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
)
params = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30) | st.sampled_from(
    ["next_steps", "std", "row-1", "..", "%2e%2e", "a/b"]
)


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Ledger, str]]:
    from worker.catalog import Catalog
    from worker.http.sources import parse_sources

    path = tmp_path_factory.mktemp("fuzz") / "ledger.sqlite3"
    ledger = Ledger.from_url(f"sqlite:///{path}")
    ledger.migrate()
    _, key = store.create_api_key(ledger, "acme", datetime.now(UTC))
    sources = {"std": {"platform": "standard", "tenant": "acme", "secrets": [STANDARD_SECRET]}}
    intake = Intake(
        ledger=ledger,
        catalog=Catalog.load(),
        enqueue=lambda ids: None,
        sources=parse_sources(json.dumps(sources)),
        max_body_bytes=16 * 1024,
        slack_signing_secret=SLACK_SECRET,
    )
    with serving(intake) as server:
        yield server, ledger, key
    ledger.dispose()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    operation=st.sampled_from(OPERATIONS),
    body=bodies,
    param=params,
    credentials=st.sampled_from(["key", "none", "junk", "signed", "slack"]),
    timeout=st.sampled_from(
        ["", "?timeout_seconds=0.05", "?timeout_seconds=-1", "?timeout_seconds=x"]
    ),
)
def test_no_operation_answers_5xx_or_outside_the_spec(
    fuzz_target: tuple[Server, Ledger, str],
    operation: tuple[str, str, dict[str, Any]],
    body: bytes,
    param: str,
    credentials: str,
    timeout: str,
) -> None:
    server, _, key = fuzz_target
    path, method, spec = operation
    concrete = path
    for name in ("source", "conversation_id", "run_id", "name"):
        concrete = concrete.replace("{" + name + "}", quote(param, safe=""))
    if "invoke" in path:
        concrete += timeout
    headers = {
        "key": {"Authorization": f"Bearer {key}"},
        "none": {},
        "junk": {"Authorization": "Bearer phk_junk"},
        "signed": standard_headers(body, STANDARD_SECRET, msg_id=quote(param)[:40])
        if _utf8(body)
        else {},
        "slack": slack_headers(body),
    }[credentials]
    sent = body if method == "post" else None
    answer = server.request(method.upper(), concrete, sent, headers)
    assert answer.status < 500, (concrete, answer.body)
    assert str(answer.status) in spec["responses"] or answer.status in (404, 405), (
        concrete,
        answer.status,
    )


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(conversations_like, min_size=1, max_size=3), single=st.booleans())
def test_submitting_near_valid_conversations_never_answers_5xx(
    fuzz_target: tuple[Server, Ledger, str], batch: list[dict[str, Any]], single: bool
) -> None:
    """The operation that writes conversations, with credentials, on near-valid input."""
    server, _, key = fuzz_target
    body = batch[0] if single else batch
    answer = server.request("POST", "/v1/conversations", body, {"Authorization": f"Bearer {key}"})
    assert answer.status in (202, 400, 422), answer.body
    if answer.status == 422:
        assert answer.body["error"].split(":")[0]


def slack_headers(body: bytes) -> dict[str, str]:
    """Headers Slack would sign `body` with (any bytes: the signature covers them as sent)."""
    timestamp = str(int(time.time()))
    digest = hmac.new(
        SLACK_SECRET.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256
    ).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}"}


def _utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_the_ledger_is_valid_after_the_fuzz(fuzz_target: tuple[Server, Ledger, str]) -> None:
    """Runs after the fuzz above (same module fixture): every stored conversation validates as
    the contract, belongs to the only tenant with credentials, and every run points at one."""
    _, ledger, _ = fuzz_target
    with ledger.engine.connect() as connection:
        rows = connection.execute(sa.select(conversations)).mappings().all()
        run_rows = connection.execute(sa.select(analysis_runs)).mappings().all()
    assert rows, "the fuzz stored no conversation, so this check would prove nothing"
    pks = set()
    for row in rows:
        conversation = Conversation.model_validate(row["payload"])
        assert conversation.tenant_id == row["tenant_id"] == "acme"
        assert conversation.content_hash() == row["transcript_hash"]
        pks.add(row["id"])
    assert all(run["conversation_pk"] in pks for run in run_rows)
