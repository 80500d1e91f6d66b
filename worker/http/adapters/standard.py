"""Standard Webhooks (standardwebhooks.com): the canonical conversation JSON, signed.

Headers `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature` (space-separated
`v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<raw body>")>`), with `whsec_<base64 key>`
secrets. The signature itself is computed by the `standardwebhooks` package; the clock and the
choice among several secrets are ours, so the check stays a pure function.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from worker.http.adapters.common import (
    Mapped,
    MappingError,
    SignatureError,
    build_conversation,
    check_fresh,
    lower_headers,
    require_secrets,
)

TOLERANCE_SECONDS = 5 * 60
DEFAULT_EVENTS = frozenset({"conversation"})
EVENT_TYPE = "conversation"


def verify(body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: float) -> None:
    """Raise SignatureError unless a `v1` signature matches one of `secrets` within 5 minutes."""
    require_secrets(secrets)
    lowered = lower_headers(headers)
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    given = lowered.get("webhook-signature")
    if not (msg_id and stamp and given):
        raise SignatureError("webhook-id, webhook-timestamp and webhook-signature are required")
    if not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError("webhook-timestamp is not Unix seconds")
    check_fresh(int(stamp), now, TOLERANCE_SECONDS, future=True)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SignatureError("the body is not UTF-8, so it cannot carry a signature") from exc
    candidates = []
    for versioned in given.split():
        version, _, encoded = versioned.partition(",")
        if version == "v1":
            try:
                candidates.append(base64.b64decode(encoded, validate=True))
            except (binascii.Error, ValueError):
                continue
    sent_at = datetime.fromtimestamp(int(stamp), tz=UTC)
    matched = False
    for secret in secrets:
        try:
            signer = Webhook(secret)
        except (EmptyWebhookSecretError, binascii.Error, ValueError) as exc:
            raise SignatureError("a configured secret is not a whsec_ base64 key") from exc
        expected = base64.b64decode(signer.sign(msg_id, sent_at, text).partition(",")[2])
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no configured secret produced this signature")


def parse(payload: Any, *, tenant: str, events: frozenset[str]) -> Mapped:
    """The canonical conversation; its tenant defaults to the source's and may not differ."""
    if not isinstance(payload, dict):
        raise MappingError("body", "must be a conversation object")
    given = payload.get("tenant_id")
    if given is not None and given != tenant:
        raise MappingError("tenant_id", "differs from the tenant this source belongs to")
    conversation = build_conversation({**payload, "tenant_id": tenant})
    # The event identity is the webhook-id header; the app supplies it (the body has none).
    return Mapped(conversation, "", EVENT_TYPE)
