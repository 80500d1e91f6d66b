"""Platform adapters: pure functions from a platform's webhook to a canonical `Conversation`.

Each platform module offers `verify(body, headers, secrets, now)`, which raises `SignatureError`
unless the raw bytes carry a valid, fresh signature by one of the configured secrets (several
during a rotation), and `parse(payload, tenant=..., events=...)`, which returns a `Mapped`
conversation with the event identity used for deduplication, an `Ignored` event type, or raises
`MappingError` naming the field that does not map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from worker.http.adapters import elevenlabs, retell, standard, vapi
from worker.http.adapters.common import (
    Ignored,
    Mapped,
    MappingError,
    SignatureError,
    lower_headers,
)

PlatformName = Literal["elevenlabs", "retell", "vapi", "standard"]


@dataclass(frozen=True)
class Platform:
    """How one platform signs and shapes its conversation-end webhook."""

    verify: Callable[[bytes, Mapping[str, str], Sequence[str], float], None]
    parse: Callable[..., Mapped | Ignored]
    default_events: frozenset[str]


PLATFORMS: dict[str, Platform] = {
    "elevenlabs": Platform(elevenlabs.verify, elevenlabs.parse, elevenlabs.DEFAULT_EVENTS),
    "retell": Platform(retell.verify, retell.parse, retell.DEFAULT_EVENTS),
    "vapi": Platform(vapi.verify, vapi.parse, vapi.DEFAULT_EVENTS),
    "standard": Platform(standard.verify, standard.parse, standard.DEFAULT_EVENTS),
}


def parse_payload(
    platform: str,
    payload: Any,
    headers: Mapping[str, str],
    *,
    tenant: str,
    events: frozenset[str] | None = None,
) -> Mapped | Ignored:
    """Map a verified payload of `platform` for a source of `tenant` listening to `events`.

    Standard Webhooks name the delivery in the `webhook-id` header, which is its identity."""
    chosen = PLATFORMS[platform]
    mapped = chosen.parse(payload, tenant=tenant, events=events or chosen.default_events)
    if platform == "standard" and isinstance(mapped, Mapped):
        webhook_id = lower_headers(headers).get("webhook-id", "")
        mapped = replace(mapped, event_id=f"{webhook_id}:{mapped.event_type}")
    return mapped


__all__ = [
    "PLATFORMS",
    "Ignored",
    "Mapped",
    "MappingError",
    "Platform",
    "PlatformName",
    "SignatureError",
    "parse_payload",
]
