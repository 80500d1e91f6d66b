"""Webhook sources: which platform posts to `/v1/webhooks/{source}`, for which tenant, signed
with which secrets (two at once during a rotation), listening to which event types.

`POSTHOC_WEBHOOK_SOURCES` is a JSON object, or the path of a YAML or JSON file holding one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError

from analyzers.errors import ConfigError

SourceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,100}$")]


class WebhookSource(BaseModel):
    """One configured source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    platform: Literal["elevenlabs", "retell", "vapi", "standard"]
    tenant: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    secrets: list[SecretStr] = Field(min_length=1, max_length=8)
    events: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] | None = None

    def secret_values(self) -> list[str]:
        return [secret.get_secret_value() for secret in self.secrets]


def parse_sources(config: str | None) -> dict[str, WebhookSource]:
    """Sources from the setting's text (JSON, or a file path); a ConfigError names the problem
    and the source, never a secret."""
    if config is None or not config.strip():
        return {}
    text = config.strip()
    data: Any
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"POSTHOC_WEBHOOK_SOURCES is not valid JSON: {exc}") from exc
    else:
        path = Path(text)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"POSTHOC_WEBHOOK_SOURCES file {path} cannot be read: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"POSTHOC_WEBHOOK_SOURCES file {path} is not YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("POSTHOC_WEBHOOK_SOURCES must be an object from source name to source")
    sources: dict[str, WebhookSource] = {}
    problems: list[str] = []
    for name, value in data.items():
        if not isinstance(name, str) or not _valid_name(name):
            problems.append(f"source name {str(name)[:40]!r} must be letters, digits, _ . -")
            continue
        try:
            sources[name] = WebhookSource.model_validate(value)
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"])
                problems.append(f"source {name!r}: {where}: {error['msg']}")
    if problems:
        raise ConfigError("POSTHOC_WEBHOOK_SOURCES: " + "; ".join(problems))
    return sources


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= 100 and all(ch.isalnum() or ch in "_.-" for ch in name)
