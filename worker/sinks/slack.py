"""The Slack edge: post a rendered result exactly once, with the real `slack_sdk` `WebClient`.

Slack has no idempotency key for `chat.postMessage`, so exactly-once is built here:

1. every message carries its delivery id (and its part number) in message metadata;
2. the `ts` Slack returns is handed to `save` at once, and the caller stores it in the ledger;
3. a delivery that already has a `ts` for a part updates that message (`chat.update`) instead
   of posting again;
4. when a post's answer was lost (connection dropped after Slack may have accepted it), or a
   previous attempt may have posted without recording it, the part is looked up by its metadata
   in the channel's recent history (`conversations.history` / `conversations.replies` with
   `include_all_metadata=true`: without it Slack returns no metadata and a lookup finds nothing)
   before anything is posted again;
5. the SDK's own retry handlers are off (its default retries a reset connection by posting
   blindly again); retries are the delivery ledger's, which honours `Retry-After`.

Incoming-webhook URLs (`WebhookClient`) are the second mode. Their limits, by Slack's design:
the answer is the text `ok` with no `ts`, so a webhook post can never be updated, threaded under
or found again; exactly-once degrades to at-least-once (a dropped answer means a possible
duplicate); only the headline is sent (its note counts the items left out); the channel, name
and icon are the ones chosen when the webhook was installed.
"""

from __future__ import annotations

import http.client
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from worker.sinks.errors import RetryLater, Undeliverable
from worker.sinks.render import RenderedResult, SlackMessage

METADATA_EVENT_TYPE = "posthoc_delivery"
HISTORY_LOOKBACK = 200
"""How many recent channel messages a lookup reads. Deliveries are looked up soon after the
attempt that may have posted, so their message is among the most recent ones."""
TIMEOUT_SECONDS = 15

_TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
_CONNECTION_ERRORS = (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError)


@dataclass(frozen=True)
class SlackReceipt:
    """What Slack told us: the channel id and the `ts` of each part posted (0 = headline)."""

    channel_id: str | None = None
    ts: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"channel_id": self.channel_id, "ts": {str(k): v for k, v in self.ts.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SlackReceipt:
        if not data:
            return cls()
        return cls(
            channel_id=data.get("channel_id"),
            ts={int(k): str(v) for k, v in (data.get("ts") or {}).items()},
        )


def web_client(token: str, base_url: str) -> WebClient:
    """A `WebClient` with no retry handlers: a blind retry of a post is a duplicate."""
    return WebClient(token=token, base_url=base_url, timeout=TIMEOUT_SECONDS, retry_handlers=[])


def deliver_to_slack(
    client: WebClient,
    *,
    delivery_id: str,
    channel: str,
    rendered: RenderedResult,
    receipt: SlackReceipt,
    may_have_posted: bool,
    save: Callable[[SlackReceipt], None],
) -> SlackReceipt:
    """Post (or update) the headline and its thread replies; return the final receipt.

    `may_have_posted` says an earlier attempt may have posted parts it did not record: those
    parts are looked up before they are posted. Raises `RetryLater` or `Undeliverable`.
    """
    for part, message in enumerate(rendered.messages):
        thread_ts = receipt.ts.get(0) if part > 0 else None
        if part > 0 and thread_ts is None:
            raise Undeliverable("the headline has no ts to thread under", reason="no_headline")
        known = receipt.ts.get(part)
        if known is None and may_have_posted:
            channel_id = receipt.channel_id or _channel_id(client, channel)
            # A channel the workspace does not list holds no message of ours.
            if channel_id is not None:
                receipt = replace(receipt, channel_id=channel_id)
                known = _find(client, channel_id, delivery_id, part, thread_ts)
        if known is not None:
            try:
                _call(client.chat_update, channel=receipt.channel_id, ts=known, **_body(message))
            except _LostAnswer as lost:  # an update is safe to repeat
                raise RetryLater("an update lost its answer", reason="answer_lost") from lost
            receipt = replace(receipt, ts={**receipt.ts, part: known})
        else:
            receipt = _post(client, delivery_id, channel, part, message, thread_ts, receipt)
        save(receipt)
    return receipt


def _post(
    client: WebClient,
    delivery_id: str,
    channel: str,
    part: int,
    message: SlackMessage,
    thread_ts: str | None,
    receipt: SlackReceipt,
) -> SlackReceipt:
    metadata = {
        "event_type": METADATA_EVENT_TYPE,
        "event_payload": {"delivery_id": delivery_id, "part": part},
    }
    target = receipt.channel_id or channel
    try:
        answer = _call(
            client.chat_postMessage,
            channel=target,
            thread_ts=thread_ts,
            metadata=metadata,
            unfurl_links=False,
            **_body(message),
        )
    except _LostAnswer as lost:
        # Slack may have stored the message. Find it before anyone posts it again; if the
        # lookup cannot tell, the next attempt looks again (it runs with may_have_posted).
        channel_id = receipt.channel_id or _channel_id(client, channel)
        found = _find(client, channel_id, delivery_id, part, thread_ts) if channel_id else None
        if found is None:
            raise RetryLater(
                "the answer to a post was lost; the next attempt looks it up first",
                reason="answer_lost",
            ) from lost
        return SlackReceipt(channel_id=channel_id, ts={**receipt.ts, part: found})
    return SlackReceipt(
        channel_id=str(answer["channel"]), ts={**receipt.ts, part: str(answer["ts"])}
    )


def _body(message: SlackMessage) -> dict[str, Any]:
    return {"text": message.text, "blocks": message.blocks}


class _LostAnswer(Exception):
    """The request went out and no answer came back."""


def _call(method: Callable[..., Any], **kwargs: Any) -> Any:
    """Call one Web API method; translate its failures into the delivery's errors."""
    try:
        return method(**kwargs)
    except SlackApiError as exc:
        status = exc.response.status_code
        error = str(exc.response.get("error") or f"http_{status}")
        if status == 429 or error in _TRANSIENT_ERRORS or status >= 500:
            retry_after = _retry_after(exc.response.headers)
            raise RetryLater(
                f"Slack answered {status} {error}", reason=f"slack_{error}", retry_after=retry_after
            ) from None
        raise Undeliverable(f"Slack refused the call: {error}", reason=f"slack_{error}") from None
    except _CONNECTION_ERRORS as exc:
        raise _LostAnswer(type(exc).__name__) from exc


def _retry_after(headers: Any) -> float | None:
    for name, value in dict(headers or {}).items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return None
    return None


def _channel_id(client: WebClient, channel: str) -> str | None:
    """The id of a channel named `#x`: Slack's history wants ids; the fake and Slack accept a
    channel id as is, and a post's answer names it."""
    name = channel.lstrip("#")
    if name[:1] in {"C", "G", "D"} and name.isupper():
        return name
    try:
        answer = _call(
            client.conversations_list, limit=1000, types="public_channel,private_channel"
        )
    except (_LostAnswer, RetryLater, Undeliverable):
        return None
    for found in answer.get("channels", []):
        if found.get("name") == name:
            return str(found["id"])
    return None


def _find(
    client: WebClient, channel_id: str, delivery_id: str, part: int, thread_ts: str | None
) -> str | None:
    """The `ts` of the message carrying (delivery id, part) in the channel or thread, if any."""
    try:
        if thread_ts is None:
            answer = _call(
                client.conversations_history,
                channel=channel_id,
                limit=HISTORY_LOOKBACK,
                include_all_metadata=True,
            )
        else:
            answer = _call(
                client.conversations_replies,
                channel=channel_id,
                ts=thread_ts,
                limit=HISTORY_LOOKBACK,
                include_all_metadata=True,
            )
    except _LostAnswer as lost:
        raise RetryLater("a history lookup lost its answer", reason="lookup_failed") from lost
    return match_metadata(answer.get("messages", []), delivery_id, part)


def match_metadata(messages: Sequence[dict[str, Any]], delivery_id: str, part: int) -> str | None:
    """The `ts` of the first message whose metadata names this delivery and part."""
    for message in messages:
        if not isinstance(message, dict):
            continue
        metadata = message.get("metadata")
        payload = metadata.get("event_payload") if isinstance(metadata, dict) else None
        if (
            isinstance(payload, dict)
            and metadata.get("event_type") == METADATA_EVENT_TYPE  # type: ignore[union-attr]
            and payload.get("delivery_id") == delivery_id
            and payload.get("part") == part
            and isinstance(message.get("ts"), str)
        ):
            return str(message["ts"])
    return None


def deliver_to_incoming_webhook(url: str, rendered: RenderedResult) -> None:
    """Post the headline through an incoming-webhook URL.

    No `ts` comes back, so nothing can be updated or threaded (see the module docstring).
    """
    client = WebhookClient(url=url, timeout=TIMEOUT_SECONDS, retry_handlers=[])
    headline = rendered.headline
    try:
        answer = client.send(text=headline.text, blocks=headline.blocks)
    except _CONNECTION_ERRORS as exc:
        raise RetryLater("the webhook post lost its answer", reason="answer_lost") from exc
    if answer.status_code == 429 or answer.status_code >= 500:
        retry_after = _retry_after(answer.headers)
        raise RetryLater(
            f"the incoming webhook answered {answer.status_code}",
            reason=f"http_{answer.status_code}",
            retry_after=retry_after,
        )
    if answer.status_code != 200:
        raise Undeliverable(
            f"the incoming webhook refused the message: {answer.status_code} {answer.body[:200]}",
            reason=f"http_{answer.status_code}",
        )
