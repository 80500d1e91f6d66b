"""What every adapter shares: results, errors, constant-time HMAC checks and field access that
names the failing field."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from schemas.conversation import Conversation
from schemas.rules import RULE_VIOLATIONS


class SignatureError(Exception):
    """The delivery is not signed by any configured secret, or its timestamp is stale: 401.

    The message says which check failed; it never contains a secret or the body."""


class MappingError(Exception):
    """A verified JSON payload does not map to a conversation: 422, naming the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class Mapped:
    """A conversation mapped from a delivery, and the identity that makes a redelivery a
    duplicate (the platform's conversation or call id plus the event type, or `webhook-id`)."""

    conversation: Conversation
    event_id: str
    event_type: str


@dataclass(frozen=True)
class Ignored:
    """An event type this source does not analyse (answered 200, logged)."""

    event_type: str
    event_id: str | None = None


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names are case-insensitive; the checks look them up in lower case."""
    return {name.lower(): value for name, value in headers.items()}


def hmac_sha256_hex(secret: str, message: bytes) -> str:
    """Hex HMAC-SHA256 of `message` keyed by the UTF-8 bytes of `secret`."""
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def any_secret_matches(
    secrets: Sequence[str], message: bytes, given: Sequence[str], *, prefix: str = ""
) -> bool:
    """Whether `given` holds the hex HMAC of `message` under any secret. Every pair is
    compared, in constant time each, so timing says nothing about which one matched."""
    found = False
    for secret in secrets:
        expected = (prefix + hmac_sha256_hex(secret, message)).encode()
        for candidate in given:
            found |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    return found


def check_fresh(sent_at: float, now: float, tolerance_seconds: float, *, future: bool) -> None:
    """Refuse a timestamp older than the tolerance (or newer, when `future` is checked too)."""
    if now - sent_at > tolerance_seconds:
        raise SignatureError(f"timestamp is older than {tolerance_seconds:.0f} seconds")
    if future and sent_at - now > tolerance_seconds:
        raise SignatureError(f"timestamp is more than {tolerance_seconds:.0f} seconds ahead")


def require_secrets(secrets: Sequence[str]) -> None:
    if not secrets:
        raise SignatureError("this source has no secret configured")


def field(
    data: Any, path: str, kind: type | tuple[type, ...], *, required: bool = True, where: str = ""
) -> Any:
    """`data[a][b]...` for the dotted `path`, checked to be of `kind`, or MappingError naming
    the field as `where.path` (where `data` sits in the payload)."""
    try:
        return _field(data, path, kind, required=required)
    except MappingError as exc:
        if not where:
            raise
        name = where if exc.field == "body" else f"{where}.{exc.field}"
        raise MappingError(name, exc.problem) from None


def _field(data: Any, path: str, kind: type | tuple[type, ...], *, required: bool) -> Any:
    current = data
    walked: list[str] = []
    for part in path.split("."):
        walked.append(part)
        if not isinstance(current, dict):
            raise MappingError(".".join(walked[:-1]) or "body", "is not a JSON object")
        if part not in current or current[part] is None:
            if required:
                raise MappingError(".".join(walked), "is required")
            return None
        current = current[part]
    if not isinstance(current, kind) or (isinstance(current, bool) and bool not in _kinds(kind)):
        names = " or ".join(k.__name__ for k in _kinds(kind))
        raise MappingError(path, f"must be {_json_kind(names)}, got {type(current).__name__}")
    return current


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _json_kind(names: str) -> str:
    return (
        names.replace("dict", "an object")
        .replace("list", "an array")
        .replace("str", "a string")
        .replace("int", "a number")
        .replace("float", "a number")
        .replace("bool", "a boolean")
    )


def unix_seconds(value: float, path: str) -> datetime:
    """A datetime from Unix seconds, or MappingError naming the field."""
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise MappingError(path, f"is not a valid Unix time ({exc})") from exc


def seconds_after(start: datetime, seconds: float, path: str) -> datetime:
    """`start` plus an offset in seconds, or MappingError naming the field when the sum is not a
    representable time (a fuzzer's 1e300, a platform's garbage)."""
    try:
        return start + timedelta(seconds=seconds)
    except (OverflowError, ValueError) as exc:
        raise MappingError(path, f"is not a usable number of seconds ({exc})") from exc


def json_arguments(text: Any) -> dict[str, Any] | None:
    """Tool arguments platforms send as a JSON string: the object, or the text kept verbatim."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"raw": text}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def json_result(text: Any) -> Any:
    """A tool result given as text: parsed when it is JSON, else the text."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def located_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """(dotted field, problem) for every error, the contract's rule violations (reported by
    pydantic at the model's root) expanded to the fields they name."""
    found: list[tuple[str, str]] = []
    for error in exc.errors():
        violations = (error.get("ctx") or {}).get("violations")
        if error["type"] == RULE_VIOLATIONS and isinstance(violations, list):
            found += [
                (".".join(str(part) for part in v["loc"]), str(v["message"])) for v in violations
            ]
        else:
            found.append((".".join(str(part) for part in error["loc"]), error["msg"]))
    return found


def build_conversation(data: dict[str, Any], field_prefix: str = "") -> Conversation:
    """Validate the mapped conversation; a failure names the canonical field that broke."""
    try:
        return Conversation.model_validate(data)
    except ValidationError as exc:
        location, problem = located_errors(exc)[0]
        raise MappingError(f"{field_prefix}{location or 'conversation'}", problem) from exc
