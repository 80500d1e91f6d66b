"""Procedure review in Slack, through the real `slack_sdk` against the fake Slack and the real
`posthoc serve` app: the review message (with Approve and Reject buttons) is posted once, even
when the answer is lost or the process dies after Slack stored it; a signed click approves or
rejects, idempotently; a bad or stale signature is 401; the message then shows the decision."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.procedure import Procedure
from tests.worker.http.server import Server, serving
from worker.catalog import Catalog
from worker.http.app import Intake
from worker.ledger import Ledger
from worker.sinks.fake_slack import (
    AcceptThenDrop,
    FakeSlack,
    StoredMessage,
    block_actions_payload,
    serve_fake_slack,
    signed_interaction,
)
from worker.sinks.procedure_review import ACTION_APPROVE, ACTION_REJECT, ProcedureReviewer
from worker.sinks.slack import web_client

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the example secret of Slack's documentation
CHANNEL = "#procedure-review"
PATH = "/v1/slack/interactions"


def candidate(name: str = "vendor_onboarding_learned") -> Procedure:
    return Procedure.model_validate(
        {
            "name": name,
            "created_by": "learned",
            "tenant_id": "globex",
            "agent_id": "procurement-assistant",
            "trigger": {
                "description": "An employee asks to onboard a new vendor.",
                "patterns": ["onboard * vendor"],
            },
            "parameters": [{"name": "vendor_name"}],
            "steps": [
                {"tool": "vendor_lookup", "arguments": {"name": "{{vendor_name}}"}},
                {
                    "if": {"expression": "vendor_lookup.result == null"},
                    "steps": [{"tool": "vendor_create", "arguments": {"name": "{{vendor_name}}"}}],
                },
                {"instruction": "Confirm the new vendor id to the employee."},
            ],
        }
    )


@pytest.fixture
def slack() -> Iterator[tuple[FakeSlack, str]]:
    fake = FakeSlack(token="xoxb-review")
    with serve_fake_slack(fake) as base_url:
        yield fake, base_url


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as ledger:
        ledger.migrate()
        yield ledger


@pytest.fixture
def reviewer(ledger: Ledger, slack: tuple[FakeSlack, str]) -> ProcedureReviewer:
    return ProcedureReviewer(ledger.procedures, web_client("xoxb-review", slack[1]), CHANNEL)


@pytest.fixture
def server(ledger: Ledger, reviewer: ProcedureReviewer) -> Iterator[Server]:
    intake = Intake(
        ledger=ledger,
        catalog=Catalog.from_specs([]),
        enqueue=lambda ids: None,
        slack_signing_secret=SECRET,
        reviewer=reviewer,
    )
    with serving(intake) as running:
        yield running


def stored_pending(ledger: Ledger, support: tuple[str, ...] = ("c-1", "c-2", "c-3")) -> str:
    outcome = ledger.procedures.store(candidate(), support=support)
    assert outcome.stored.status == "pending"
    return outcome.stored.id


def the_message(fake: FakeSlack) -> StoredMessage:
    [message] = fake.messages(CHANNEL)
    return message


def click(
    server: Server, message: StoredMessage, action: str, *, user: str = "U0ANNA", at: int = 0
) -> Any:
    payload = block_actions_payload(message, action, user_id=user)
    body, headers = signed_interaction(SECRET, payload, at or int(time.time()))
    return server.request("POST", PATH, body, headers)


def buttons(message: StoredMessage) -> list[str]:
    return [
        element["action_id"]
        for block in message.blocks
        if block.get("type") == "actions"
        for element in block["elements"]
    ]


def test_the_review_message_is_posted_once_with_both_buttons(
    ledger: Ledger, reviewer: ProcedureReviewer, slack: tuple[FakeSlack, str]
) -> None:
    fake, _ = slack
    procedure_id = stored_pending(ledger)
    assert reviewer.request(procedure_id).status == "posted"
    assert reviewer.request(procedure_id).status == "already_posted"
    assert [o.status for o in reviewer.request_pending()] == ["already_posted"]
    message = the_message(fake)
    assert buttons(message) == [ACTION_APPROVE, ACTION_REJECT]
    text = json.dumps(message.blocks)
    assert "vendor_onboarding_learned v1" in text
    assert "3 conversation(s)" in text
    assert "call `vendor_lookup`" in text
    assert "2.1. call `vendor_create`" in text
    assert message.metadata == {
        "event_type": "posthoc_delivery",
        "event_payload": {"delivery_id": f"review:{procedure_id}", "part": 0},
    }
    # An approved procedure gets no review message.
    approved = ledger.procedures.store(candidate("other").model_copy(update={"approved": True}))
    assert reviewer.request(approved.stored.id).status == "not_pending"


def test_a_lost_answer_is_looked_up_not_posted_twice(
    ledger: Ledger, reviewer: ProcedureReviewer, slack: tuple[FakeSlack, str]
) -> None:
    fake, _ = slack
    procedure_id = stored_pending(ledger)
    fake.fail_next("chat.postMessage", AcceptThenDrop())
    first = reviewer.request(procedure_id)
    # The fake stored the post and dropped the answer; the lookup right away found it.
    assert first.status in ("posted", "retry_later")
    assert reviewer.request(procedure_id).status in ("posted", "already_posted")
    assert len(fake.messages(CHANNEL)) == 1
    assert fake.duplicates() == 0


def test_a_process_killed_after_the_post_does_not_post_again(
    ledger: Ledger, slack: tuple[FakeSlack, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst moment: Slack stored the message and the process died before the ledger
    recorded its ts. The next process sees an attempt without a receipt and looks it up."""
    fake, base_url = slack
    procedure_id = stored_pending(ledger)
    store = ledger.procedures
    dying = ProcedureReviewer(store, web_client("xoxb-review", base_url), CHANNEL)
    real_save = store.save_review

    def die_on_receipt(pid: str, review: dict[str, Any]) -> None:
        if "receipt" in review:
            raise SystemExit("killed")  # the process ends between Slack's answer and the commit
        real_save(pid, review)

    monkeypatch.setattr(store, "save_review", die_on_receipt)
    with pytest.raises(SystemExit):
        dying.request(procedure_id)
    assert len(fake.messages(CHANNEL)) == 1
    fresh = ProcedureReviewer(ledger.procedures, web_client("xoxb-review", base_url), CHANNEL)
    assert fresh.request(procedure_id).status == "posted"
    assert len(fake.messages(CHANNEL)) == 1
    assert fake.count("conversations.history") >= 1
    assert fresh.request(procedure_id).status == "already_posted"


def test_a_signed_click_approves_once_and_the_message_shows_it(
    ledger: Ledger, reviewer: ProcedureReviewer, server: Server, slack: tuple[FakeSlack, str]
) -> None:
    fake, _ = slack
    procedure_id = stored_pending(ledger)
    reviewer.request(procedure_id)
    # As the reviewers' Slack clients show it before anyone clicks (the fake edits in place).
    message = copy.deepcopy(the_message(fake))
    task = "Onboard the new vendor TechCorp"
    scope = {"tenant_id": "globex", "agent_id": "procurement-assistant"}
    assert ledger.procedures.find_match(task, **scope) is None
    answer = click(server, message, ACTION_APPROVE)
    assert answer.status == 200, answer.body
    assert answer.body == {"procedure_id": procedure_id, "status": "approved", "changed": True}
    stored = ledger.procedures.get(procedure_id)
    assert stored is not None
    assert (stored.status, stored.decided_by) == ("approved", "slack:U0ANNA")
    found = ledger.procedures.find_match(task, **scope)
    assert found is not None
    assert found.stored.id == procedure_id
    # The message now says who approved it, and has no buttons left.
    updated = the_message(fake)
    assert updated.edits == 1
    assert buttons(updated) == []
    assert "<@U0ANNA>" in json.dumps(updated.blocks)
    # The same click again (Slack retries, a double click) changes nothing.
    again = click(server, message, ACTION_APPROVE, user="U0BOB")
    assert again.status == 200
    assert again.body["changed"] is False
    assert ledger.procedures.get(procedure_id) == stored
    # Rejecting after the approval is refused: the first reviewer wins.
    late = click(server, message, ACTION_REJECT, user="U0BOB")
    assert late.status == 409
    assert late.body["error"] == "already approved by slack:U0ANNA"
    assert ledger.procedures.get(procedure_id) == stored


def test_a_signed_click_rejects_and_keeps_it_out(
    ledger: Ledger, reviewer: ProcedureReviewer, server: Server, slack: tuple[FakeSlack, str]
) -> None:
    procedure_id = stored_pending(ledger)
    reviewer.request(procedure_id)
    answer = click(server, the_message(slack[0]), ACTION_REJECT)
    assert answer.status == 200
    assert answer.body["status"] == "rejected"
    scope = {"tenant_id": "globex", "agent_id": "procurement-assistant"}
    assert ledger.procedures.find_match("Onboard the new vendor TechCorp", **scope) is None
    assert ledger.procedures.active(**scope) == []


TAMPERINGS = ("wrong_secret", "changed_body", "stale", "future", "missing", "not_a_time")


def test_a_bad_signature_is_401_and_decides_nothing(
    ledger: Ledger, reviewer: ProcedureReviewer, server: Server, slack: tuple[FakeSlack, str]
) -> None:
    procedure_id = stored_pending(ledger)
    reviewer.request(procedure_id)
    payload = block_actions_payload(the_message(slack[0]), ACTION_APPROVE)
    for tamper in TAMPERINGS:  # one server for all of them: each case is one request
        now = int(time.time())
        secret = "not-the-secret" if tamper == "wrong_secret" else SECRET
        at = {"stale": now - 301, "future": now + 301}.get(tamper, now)
        body, headers = signed_interaction(secret, payload, at)
        if tamper == "changed_body":
            body = body.replace(b"approve", b"reject")
        if tamper == "missing":
            del headers["x-slack-signature"]
        if tamper == "not_a_time":
            headers["x-slack-request-timestamp"] = "soon"
        answer = server.request("POST", PATH, body, headers)
        assert answer.status == 401, tamper
        assert answer.body["error"].startswith("signature: "), tamper
        stored = ledger.procedures.get(procedure_id)
        assert stored is not None
        assert stored.status == "pending", tamper
    # The untampered request is accepted, so the cases above failed for their tampering.
    body, headers = signed_interaction(SECRET, payload, int(time.time()))
    assert server.request("POST", PATH, body, headers).status == 200


def test_unknown_procedures_other_interactions_and_bad_payloads(server: Server) -> None:
    def send(payload: Any, raw: bytes | None = None) -> Any:
        body = raw if raw is not None else urlencode({"payload": json.dumps(payload)}).encode()
        _, headers = signed_interaction(SECRET, {}, int(time.time()))
        from slack_sdk.signature import SignatureVerifier

        headers["x-slack-signature"] = (
            SignatureVerifier(SECRET).generate_signature(
                timestamp=headers["x-slack-request-timestamp"], body=body
            )
            or ""
        )
        return server.request("POST", PATH, body, headers)

    click_on = {
        "type": "block_actions",
        "user": {"id": "U1"},
        "actions": [{"action_id": ACTION_APPROVE, "value": "proc_nope"}],
    }
    assert send(click_on).status == 404
    assert send({"type": "view_submission"}).body == {"ignored": "view_submission"}
    other = {**click_on, "actions": [{"action_id": "something_else"}]}
    assert send(other).body == {"ignored": "block_actions"}
    no_user = {**click_on, "user": None}
    assert send(no_user).body["error"] == "payload.user.id: must be the clicking user's id"
    assert send(None, raw=b"payload=%7Bnot-json").body["error"] == "payload: is not JSON"
    assert send(None, raw=b"other=1").body["error"].startswith("payload: missing")


def test_without_a_signing_secret_the_endpoint_is_off(ledger: Ledger) -> None:
    intake = Intake(ledger=ledger, catalog=Catalog.from_specs([]), enqueue=lambda ids: None)
    with serving(intake) as running:
        body, headers = signed_interaction(SECRET, {"type": "block_actions"}, int(time.time()))
        assert running.request("POST", PATH, body, headers).status == 404


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )
    | st.fixed_dictionaries(
        {
            "type": st.just("block_actions"),
            "actions": st.lists(
                st.fixed_dictionaries(
                    {
                        "action_id": st.sampled_from([ACTION_APPROVE, ACTION_REJECT, "x"]),
                        "value": st.text(max_size=250) | st.integers(),
                    }
                ),
                max_size=2,
            ),
            "user": st.fixed_dictionaries({"id": st.text(max_size=250) | st.none()}),
        }
    ),
    raw=st.none() | st.binary(max_size=120),
)
def test_fuzz_signed_interactions_never_fail_the_server(
    server: Server, ledger: Ledger, payload: Any, raw: bytes | None
) -> None:
    """Any signed body is answered as the spec lists (never a 5xx) and decides nothing that
    does not exist."""
    from slack_sdk.signature import SignatureVerifier

    body = raw if raw is not None else urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(time.time()))
    # The verifier reads the body as text: bytes that are not UTF-8 cannot carry a signature.
    signature = (
        SignatureVerifier(SECRET).generate_signature(timestamp=timestamp, body=body)
        if _utf8(body)
        else "v0=" + "0" * 64
    )
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature or "",
    }
    answer = server.request("POST", PATH, body, headers)
    assert answer.status in (200, 400, 401, 404, 409), answer.body
    assert ledger.procedures.list() == []


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_the_review_command_posts_each_pending_version_once(
    tmp_path: Path, slack: tuple[FakeSlack, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from worker.cli import app

    fake, base_url = slack
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    monkeypatch.setenv("POSTHOC_DATABASE_URL", url)
    monkeypatch.setenv("POSTHOC_SLACK_BOT_TOKEN", "xoxb-review")
    monkeypatch.setenv("POSTHOC_SLACK_API_URL", base_url)
    monkeypatch.setenv("POSTHOC_LOG_FORMAT", "json")
    with Ledger.from_url(url) as ledger:
        ledger.migrate()
        procedure_id = stored_pending(ledger)
    runner = CliRunner()
    handlers = list(logging.getLogger().handlers)
    try:
        first = runner.invoke(app, ["procedures", "review", "--channel", CHANNEL])
        assert first.exit_code == 0, first.output
        assert f"{procedure_id}: posted" in first.stdout
        second = runner.invoke(app, ["procedures", "review", "--channel", CHANNEL])
        assert f"{procedure_id}: already_posted" in second.stdout
        assert len(fake.messages(CHANNEL)) == 1
        monkeypatch.delenv("POSTHOC_SLACK_BOT_TOKEN")
        assert runner.invoke(app, ["procedures", "review"]).exit_code == 2
    finally:
        # The command configures logging for the process: undo that for other tests.
        structlog.reset_defaults()
        for handler in logging.getLogger().handlers:
            if handler not in handlers:
                logging.getLogger().removeHandler(handler)
