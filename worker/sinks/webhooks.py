"""Signed webhooks per Standard Webhooks (https://www.standardwebhooks.com/): sign, verify, send.

Every POST carries `webhook-id` (the delivery id: the same on every retry, so the receiver can
deduplicate on it), `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`:
`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per secret, space-separated, so a
receiver keeps verifying while secrets rotate. Secrets are `whsec_<base64>` (the spec's form) or
plain text. Any 2xx is success; 410 disables the destination; 408, 429 and 5xx (and timeouts,
resets) are retried, honouring `Retry-After`; other answers, redirects included, are refused.

Signing and verifying are pure functions over bytes, headers, secrets and a clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.client
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from worker.sinks.errors import DestinationGone, RetryLater, Undeliverable

TOLERANCE_SECONDS = 300
TIMEOUT_SECONDS = 15.0
SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
USER_AGENT = "posthoc-webhooks"


class SignatureError(ValueError):
    """A webhook failed verification; the message says which check failed (never a secret)."""


def secret_bytes(secret: str) -> bytes:
    """The key a secret stands for: `whsec_` + base64, or the text itself."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :] + "==", validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a whsec_ secret is not valid base64") from exc
    if not secret:
        raise ValueError("a webhook secret must not be empty")
    return secret.encode()


def split_secrets(value: str) -> list[str]:
    """Several secrets in one setting (rotation): separated by spaces or commas."""
    return [part for part in re.split(r"[\s,]+", value) if part]


def sign(secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: one `v1,` signature per secret."""
    if "." in webhook_id:
        raise ValueError("a webhook id must not contain '.'")
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1,"
        + base64.b64encode(hmac.new(secret_bytes(s), content, hashlib.sha256).digest()).decode()
        for s in secrets
    )


def signed_headers(
    secrets: Sequence[str], webhook_id: str, now: datetime, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt at `now`."""
    timestamp = int(now.timestamp())
    headers = {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp)}
    if secrets:
        headers["webhook-signature"] = sign(secrets, webhook_id, timestamp, body)
    return headers


def verify(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
    *,
    tolerance_seconds: int = TOLERANCE_SECONDS,
) -> None:
    """Raise `SignatureError` unless a `v1` signature matches one of `secrets` and the timestamp
    is within `tolerance_seconds` of `now` (either way)."""
    lower = {k.lower(): v for k, v in headers.items()}
    webhook_id = lower.get("webhook-id", "")
    raw_timestamp = lower.get("webhook-timestamp", "")
    signatures = lower.get("webhook-signature", "")
    if not (webhook_id and raw_timestamp and signatures):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    if not raw_timestamp.isdigit():
        raise SignatureError(f"webhook-timestamp is not Unix seconds: {raw_timestamp[:20]!r}")
    timestamp = int(raw_timestamp)
    if abs(now.timestamp() - timestamp) > tolerance_seconds:
        raise SignatureError("webhook-timestamp is outside the tolerance")
    content = f"{webhook_id}.{timestamp}.".encode() + body
    expected = [hmac.new(secret_bytes(s), content, hashlib.sha256).digest() for s in secrets]
    for candidate in signatures.split():
        version, _, encoded = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(given, want) for want in expected):
            return
    raise SignatureError("no signature matches")


_FIELD = re.compile(r"^\{\{\s*([A-Za-z_][\w.]*)\s*\}\}$")


def apply_mapping(mapping: Any, payload: Mapping[str, Any]) -> Any:
    """A destination's field mapping: a JSON template whose `"{{path.to.field}}"` strings are
    replaced by that value of the payload (missing paths give null); other values stay."""
    if isinstance(mapping, str):
        match = _FIELD.match(mapping)
        return _lookup(payload, match.group(1)) if match else mapping
    if isinstance(mapping, list):
        return [apply_mapping(item, payload) for item in mapping]
    if isinstance(mapping, dict):
        return {str(k): apply_mapping(v, payload) for k, v in mapping.items()}
    return mapping


def _lookup(payload: Any, path: str) -> Any:
    value = payload
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def encode_body(payload: Any) -> bytes:
    """The exact bytes sent and signed: compact JSON."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def post_webhook(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float = TIMEOUT_SECONDS,
) -> int:
    """POST `body` once; return the 2xx status, or raise `RetryLater`, `DestinationGone` or
    `Undeliverable`. Redirects are never followed."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        # The url itself is not quoted: webhook urls often carry a token in their path.
        raise Undeliverable("the webhook url must be http(s)://host/...", reason="url")
    connection_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_type(parts.hostname, parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(
            "POST",
            path,
            body=body,
            headers={
                **headers,
                "content-type": "application/json",
                "user-agent": USER_AGENT,
            },
        )
        response = connection.getresponse()
        status = response.status
        retry_after = response.getheader("retry-after")
        response.read(65536)
    except (OSError, http.client.HTTPException) as exc:
        raise RetryLater(f"webhook POST failed: {type(exc).__name__}", reason="connection") from exc
    finally:
        connection.close()
    if 200 <= status < 300:
        return status
    if status == 410:
        raise DestinationGone("the receiver answered 410 Gone: destination disabled")
    if status in {408, 429, 502, 503, 504} or status >= 500:
        raise RetryLater(
            f"the receiver answered {status}",
            reason=f"http_{status}",
            retry_after=_seconds(retry_after),
        )
    raise Undeliverable(f"the receiver refused the webhook: HTTP {status}", reason=f"http_{status}")


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
