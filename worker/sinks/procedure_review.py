"""The Slack review message of a pending (learned) procedure: Approve and Reject buttons.

`ProcedureReviewer.request(procedure_id)` posts one message per pending version to the review
channel, exactly once, with the same machinery as result deliveries (`worker.sinks.slack`):
the message carries `review:<procedure id>` as its delivery id in metadata, the attempt is
counted in the ledger before the post and Slack's `ts` saved at once after it, and an attempt
after one that may have posted looks the message up in the channel before posting.

A click reaches `posthoc serve` (`POST /v1/slack/interactions`, `worker.http.slack_review`),
which decides and then calls `show_decision`: the message is updated to say who decided, and
its buttons are gone. A decision made with the CLI can be shown the same way.

The buttons' value is the procedure id alone; the tenant comes from the stored procedure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from slack_sdk import WebClient

from analyzers.procedures.store import ProcedureNotFound, StoredProcedure
from schemas.procedure import IfStep, InstructionStep, ToolStep
from worker.ledger.procedures import LedgerProcedureStore
from worker.settings import Settings
from worker.sinks.errors import RetryLater, Undeliverable
from worker.sinks.render import (
    MAX_BLOCKS,
    MAX_HEADER_CHARS,
    MAX_SECTION_CHARS,
    RenderedResult,
    SlackMessage,
)
from worker.sinks.slack import SlackReceipt, deliver_to_slack, web_client

log = structlog.get_logger("posthoc.procedure_review")

ACTION_APPROVE = "posthoc_procedure_approve"
ACTION_REJECT = "posthoc_procedure_reject"
REVIEW_ACTIONS = {ACTION_APPROVE: "approved", ACTION_REJECT: "rejected"}
"""Button action ids and the status each one asks for."""

STEP_LINES = 20
"""Steps listed in the message; more are counted."""

ReviewStatus = Literal["posted", "already_posted", "not_pending", "retry_later", "undeliverable"]


@dataclass(frozen=True)
class ReviewOutcome:
    procedure_id: str
    status: ReviewStatus
    reason: str | None = None


def review_delivery_id(procedure_id: str) -> str:
    """The message's delivery id (in its metadata): stable across attempts."""
    return f"review:{procedure_id}"


def review_message(stored: StoredProcedure) -> SlackMessage:
    """The message: what the candidate does and when, its support, and the buttons while it is
    pending (afterwards, who decided)."""
    p = stored.procedure
    title = f"Procedure to review: {p.name} v{p.version}"
    scope = f"tenant {p.tenant_id or '*'}, agent {p.agent_id or '*'}" + (
        " (shared)" if p.shared else ""
    )
    facts = [
        f"*Trigger:* {p.trigger.description}",
        f"*Patterns:* {', '.join(f'`{x}`' for x in p.trigger.patterns) or 'none'}",
        f"*Scope:* {scope}; written by {p.created_by}",
        f"*Support:* {len(stored.support)} conversation(s)"
        + (f": {', '.join(stored.support[:10])}" if stored.support else ""),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, MAX_HEADER_CHARS)}},
        _section("\n".join(facts)),
        _section(_steps_text(stored)),
    ]
    if stored.status == "pending":
        blocks.append(
            {
                "type": "actions",
                "block_id": "review",
                "elements": [
                    _button("Approve", ACTION_APPROVE, stored.id, "primary"),
                    _button("Reject", ACTION_REJECT, stored.id, "danger"),
                ],
            }
        )
    else:
        who = stored.decided_by or "someone"
        when = stored.decided_at.isoformat(timespec="seconds") if stored.decided_at else ""
        decided = f"*{stored.status.capitalize()}* by {_who(who)} {when}".rstrip()
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": decided}]})
    return SlackMessage(text=f"{title} ({stored.status})", blocks=blocks[:MAX_BLOCKS])


class ProcedureReviewer:
    """Posts and updates review messages in `channel` with `client` (retry handlers off)."""

    def __init__(self, store: LedgerProcedureStore, client: WebClient, channel: str) -> None:
        self.store = store
        self.client = client
        self.channel = channel

    def request(self, procedure_id: str) -> ReviewOutcome:
        """Post the review message of a pending version, once."""
        stored = self.store.get(procedure_id)
        if stored is None:
            raise ProcedureNotFound(procedure_id)
        if stored.status != "pending":
            return ReviewOutcome(procedure_id, "not_pending", stored.status)
        review = self.store.review_of(procedure_id) or {}
        receipt = SlackReceipt.from_json(review.get("receipt"))
        if receipt.ts:
            return ReviewOutcome(procedure_id, "already_posted")
        attempts = int(review.get("attempts") or 0) + 1
        # Counted before the post: a process killed after Slack stored the message makes the
        # next attempt look it up instead of posting a second one.
        self.store.save_review(
            procedure_id, {**review, "channel": self.channel, "attempts": attempts}
        )

        def save(new: SlackReceipt) -> None:
            state = {"channel": self.channel, "attempts": attempts, "receipt": new.to_json()}
            self.store.save_review(procedure_id, state)

        try:
            deliver_to_slack(
                self.client,
                delivery_id=review_delivery_id(procedure_id),
                channel=self.channel,
                rendered=RenderedResult(review_message(stored)),
                receipt=receipt,
                may_have_posted=attempts > 1,
                save=save,
            )
        except RetryLater as exc:
            return ReviewOutcome(procedure_id, "retry_later", exc.reason)
        except Undeliverable as exc:
            return ReviewOutcome(procedure_id, "undeliverable", exc.reason)
        return ReviewOutcome(procedure_id, "posted")

    def request_pending(self, tenant_id: str | None = None) -> list[ReviewOutcome]:
        """Post the review message of every pending version that has none yet."""
        return [self.request(s.id) for s in self.store.list(tenant_id=tenant_id, status="pending")]

    def show_decision(self, procedure_id: str) -> bool:
        """Update the posted message to show the decision (no buttons). False when there is no
        message or Slack did not take the update (the decision stands either way)."""
        stored = self.store.get(procedure_id)
        review = self.store.review_of(procedure_id) or {}
        receipt = SlackReceipt.from_json(review.get("receipt"))
        if stored is None or not receipt.ts or receipt.channel_id is None:
            return False
        message = review_message(stored)
        try:
            self.client.chat_update(
                channel=receipt.channel_id,
                ts=receipt.ts[0],
                text=message.text,
                blocks=message.blocks,
            )
        except Exception as exc:  # any Slack or network failure: the decision is already stored
            log.warning(
                "review message not updated", procedure_id=procedure_id, error=type(exc).__name__
            )
            return False
        return True


def _steps_text(stored: StoredProcedure) -> str:
    p = stored.procedure
    if p.steps is None:
        return _cut(f"*Guidance:*\n{p.content or ''}", MAX_SECTION_CHARS)
    lines = []
    for loc, step in p.walk_steps():
        number = ".".join(str(part + 1) for part in loc if isinstance(part, int))
        lines.append(f"{number}. {_describe(step)}")
    shown = lines[:STEP_LINES]
    if len(lines) > STEP_LINES:
        shown.append(f"… and {len(lines) - STEP_LINES} more step(s)")
    return _cut("*Steps:*\n" + "\n".join(shown), MAX_SECTION_CHARS)


def _describe(step: InstructionStep | ToolStep | IfStep) -> str:
    if isinstance(step, ToolStep):
        arguments = _cut(json.dumps(step.arguments, ensure_ascii=False), 300)
        return f"call `{step.tool}` with `{arguments}`" + (" (optional)" if step.optional else "")
    if isinstance(step, IfStep):
        condition = step.condition.expression or step.condition.natural_language or ""
        return f"if {_cut(condition, 300)}:"
    return _cut(step.instruction, 300)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text or " "}}


def _button(label: str, action_id: str, value: str, style: str) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
        "style": style,
    }


def _who(decided_by: str) -> str:
    # "slack:U123" -> a Slack mention; "cli" and others as they are.
    return (
        f"<@{decided_by.removeprefix('slack:')}>" if decided_by.startswith("slack:") else decided_by
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reviewer_from_settings(
    settings: Settings, store: LedgerProcedureStore
) -> ProcedureReviewer | None:
    """The Slack reviewer of pending procedures, when a bot token and a review channel are set
    (None: people review with `posthoc procedures`)."""
    if settings.slack_bot_token is None or not settings.procedure_review_channel:
        return None
    client = web_client(settings.slack_bot_token.get_secret_value(), settings.slack_api_url)
    return ProcedureReviewer(store, client, settings.procedure_review_channel)
