"""`POST /v1/slack/interactions`: the Approve and Reject buttons of procedure review messages.

Slack signs every request to an app's interactivity URL with the app's signing secret
(`POSTHOC_SLACK_SIGNING_SECRET`); the signature is checked on the raw bytes with `slack_sdk`'s
`SignatureVerifier` (HMAC-SHA256 of `v0:timestamp:body`, constant-time, at most five minutes
old) before anything is read: a missing, stale or bad signature is `401`.

The body is `payload=<json>` (form-encoded). A `block_actions` payload whose first action is one
of the review buttons (`worker.sinks.procedure_review.REVIEW_ACTIONS`) decides the procedure
whose id is the button's value, as `slack:<user id>`:

- `200` with the procedure's status: decided now, or already in the state asked for (a second
  click or a retried request changes nothing);
- `409` when it was already decided the other way (the first reviewer wins);
- `404` for an unknown procedure, `400` naming the field for a payload that does not parse;
- `200` with `ignored` for other interactions (Slack sends every interaction of the app here).

After a decision the review message is updated to show it (best effort; the decision stands).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import structlog
from slack_sdk.signature import Clock, SignatureVerifier
from starlette.concurrency import run_in_threadpool

from analyzers.procedures.store import ProcedureNotFound, StoredProcedure
from worker.ledger.procedures import LedgerProcedureStore
from worker.sinks.procedure_review import REVIEW_ACTIONS, ProcedureReviewer

log = structlog.get_logger("posthoc.http.slack")

MAX_ID_CHARS = 200


class InteractionProblem(Exception):
    """An answer other than 200: the status and a message naming the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ClockOf(Clock):
    """`slack_sdk`'s clock, reading the app's (so tests can move time)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


def verify_signature(
    secret: str, body: bytes, headers: dict[str, str], now: Callable[[], float]
) -> None:
    """Raise a 401 problem unless Slack signed `body` with `secret` within five minutes."""
    timestamp = headers.get("x-slack-request-timestamp")
    signature = headers.get("x-slack-signature")
    if not timestamp or not signature:
        raise InteractionProblem(401, "signature: missing X-Slack-Signature or timestamp")
    # The verifier raises on a timestamp that is not a number and on a body that is not UTF-8.
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise InteractionProblem(401, "signature: X-Slack-Request-Timestamp is not a time")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise InteractionProblem(401, "signature: does not match the body") from None
    verifier = SignatureVerifier(secret, clock=_ClockOf(now))
    if not verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
        raise InteractionProblem(401, "signature: does not match, or is older than 5 minutes")


def read_action(body: bytes) -> tuple[str, str, str] | str:
    """(action id, procedure id, user id) of a review click, or the interaction type to
    ignore; raises a 400 problem naming the field that does not parse."""
    form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    raw = form.get("payload")
    if not raw:
        raise InteractionProblem(400, "payload: missing (expected payload=<json>, form-encoded)")
    try:
        payload = json.loads(raw[0])
    except (ValueError, RecursionError):
        raise InteractionProblem(400, "payload: is not JSON") from None
    if not isinstance(payload, dict):
        raise InteractionProblem(400, "payload: must be a JSON object")
    kind = payload.get("type")
    if kind != "block_actions":
        return str(kind)[:100] if kind is not None else "unknown"
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise InteractionProblem(400, "payload.actions: must be a non-empty list of objects")
    action = actions[0]
    action_id = action.get("action_id")
    if action_id not in REVIEW_ACTIONS:
        return "block_actions"
    value = action.get("value")
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise InteractionProblem(400, "payload.actions[0].value: must be a procedure id")
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_ID_CHARS:
        raise InteractionProblem(400, "payload.user.id: must be the clicking user's id")
    return str(action_id), value, user_id


def decide(
    store: LedgerProcedureStore, action_id: str, procedure_id: str, user_id: str
) -> tuple[StoredProcedure, bool]:
    """Apply the click: (the procedure after it, whether this click decided it)."""
    wanted = REVIEW_ACTIONS[action_id]
    before = store.get(procedure_id)
    if before is None:
        raise ProcedureNotFound(procedure_id)
    by = f"slack:{user_id}"
    if wanted == "approved":
        after = store.approve(procedure_id, by=by, only_if_pending=True)
    else:
        after = store.reject(procedure_id, by=by, only_if_pending=True)
    return after, before.status != after.status


async def handle_interaction(
    *,
    secret: str | None,
    store: LedgerProcedureStore,
    reviewer: ProcedureReviewer | None,
    body: bytes,
    headers: dict[str, str],
    now: Callable[[], float],
) -> tuple[int, dict[str, Any]]:
    """The answer (status, JSON body) to one interaction request."""
    if not secret:
        return 404, {
            "error": "slack: interactions are not configured (POSTHOC_SLACK_SIGNING_SECRET)"
        }
    try:
        verify_signature(secret, body, headers, now)
        action = read_action(body)
        if isinstance(action, str):
            return 200, {"ignored": action}
        action_id, procedure_id, user_id = action
        try:
            stored, changed = await run_in_threadpool(
                decide, store, action_id, procedure_id, user_id
            )
        except ProcedureNotFound:
            raise InteractionProblem(404, "payload.actions[0].value: no such procedure") from None
    except InteractionProblem as problem:
        log.info("slack_interaction", status=problem.status, problem=problem.message)
        return problem.status, {"error": problem.message}
    wanted = REVIEW_ACTIONS[action_id]
    log.info(
        "slack_interaction",
        status=200 if stored.status == wanted else 409,
        procedure_id=stored.id,
        action=wanted,
        changed=changed,
        user=user_id,
    )
    if changed and reviewer is not None:
        await run_in_threadpool(reviewer.show_decision, stored.id)
    answer = {"procedure_id": stored.id, "status": stored.status, "changed": changed}
    if stored.status != wanted:
        return 409, {
            **answer,
            "error": f"already {stored.status} by {stored.decided_by or 'someone'}",
        }
    return 200, answer
