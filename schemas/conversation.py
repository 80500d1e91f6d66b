"""The conversation posthoc analyses: the canonical JSON every intake path maps into.

`POST /v1/conversations`, `posthoc run` and the ledger all share this shape. Platform adapters
(ElevenLabs, Vapi, Retell, ...) translate into it. Fields we do not know are never dropped: on the
conversation, a turn or an event they are moved into that object's `metadata`.

The minimal conversation is a `conversation_id` and its `turns`, because that is what public
datasets and CRM exports carry: `tenant_id` defaults to the intake source's tenant (or `default`),
`agent_id` and `channel` are optional, `started_at`/`ended_at` are taken from the turns' times
when they have them and are otherwise left empty (never invented), and `outcome` is any short
string kept verbatim (`Complete`, `EarlyDisconnect`), which triggers match after normalisation.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    ConfigDict,
    Field,
    NonNegativeInt,
    StringConstraints,
    model_validator,
)

from schemas._base import Contract
from schemas.rules import RuleViolation, raise_if_any

Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
"""An id from the customer's systems: any non-empty text up to 200 characters."""

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
"""A lower_snake_case word such as a trigger's outcome (`resolved`, `customer_hung_up`)."""

Outcome = Annotated[str, StringConstraints(min_length=1, max_length=100)]
"""How the conversation ended, as the source system says it (`completed`, `Complete`,
`EarlyDisconnect`, `customer-hung-up`): kept verbatim, compared with `outcome_key`."""

DEFAULT_TENANT = "default"
"""The tenant of a conversation that names none and came from a source without one."""

Role = Literal["agent", "user", "system"]
Channel = Literal["voice", "chat", "sms", "email", "other"]

WELL_KNOWN_OUTCOMES = (
    "completed",
    "resolved",
    "escalated",
    "transferred",
    "abandoned",
    "failed",
    "voicemail",
    "unknown",
)
"""Outcomes the built-in analyzers understand. Any other short string is accepted."""

_OUTCOME_SEPARATORS = re.compile(r"[\s_\-]+")


def outcome_key(outcome: str) -> str:
    """The form outcomes are compared in: case, spaces, dashes and underscores ignored, so
    `EarlyDisconnect`, `early-disconnect`, `Early Disconnect` and `early_disconnect` match."""
    return _OUTCOME_SEPARATORS.sub("", outcome).casefold()


# Text no store can keep: NUL (PostgreSQL refuses it in text and JSONB) and unpaired surrogates
# (JSON's `\ud800` escapes produce them; they are not Unicode and UTF-8 cannot encode them).
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


def unstorable_text_problem(text: str) -> str | None:
    """Why `text` cannot be stored, or None. Never quotes the text (it is customer data)."""
    found = _UNSTORABLE_TEXT.search(text)
    if found is None:
        return None
    if found.group(0) == "\x00":
        return f"contains a NUL character (\\u0000) at position {found.start()}"
    return f"contains an unpaired surrogate (invalid Unicode) at position {found.start()}"


def may_hold_unstorable_text(data: Any) -> bool:
    """False only when no string (value or key) in JSON-like `data` holds unstorable text: a
    quick check before a walk that locates it. The C JSON encoder renders every string, NUL
    escaped as `\\u0000` and surrogates as they are, in a third of the walk's time (which runs
    on every conversation validated). True also for data that is fine but not plain JSON, or
    that has a literal backslash-u0000 in a text: the walk then decides."""
    try:
        rendered = json.dumps(data, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return True
    return "\\u0000" in rendered or _SURROGATE.search(rendered) is not None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _unstorable_text(data: Any) -> list[RuleViolation]:
    """Every string (value or key) in raw conversation data that cannot be stored, located.

    Iterative, so deep data cannot exhaust the stack; at most 20 are listed.
    """
    if not may_hold_unstorable_text(data):
        return []
    violations: list[RuleViolation] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    while stack and len(violations) < 20:
        loc, value = stack.pop()
        if isinstance(value, str):
            problem = unstorable_text_problem(value)
            if problem is not None:
                violations.append(RuleViolation(loc, "text-storable", problem))
        elif isinstance(value, dict):
            for key, item in value.items():
                problem = unstorable_text_problem(key) if isinstance(key, str) else None
                if problem is not None:
                    violations.append(RuleViolation(loc, "text-storable", f"a key {problem}"))
                else:
                    stack.append(((*loc, key), item))
        elif isinstance(value, list):
            stack.extend(((*loc, index), item) for index, item in enumerate(value))
    violations.reverse()  # the stack visits the last items first; report in document order
    return violations


def _keep_unknown_fields(cls: type[Contract], data: Any) -> Any:
    """Move fields the model does not declare into `metadata` instead of rejecting them.

    A platform adding a field must not make us refuse its conversations, and we must not lose the
    field either. A collision with an existing metadata key is an error rather than a silent
    overwrite.
    """
    if not isinstance(data, dict):
        return data
    unknown = {key: value for key, value in data.items() if key not in cls.model_fields}
    if not unknown:
        return data
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        return data  # let field validation report that metadata is not an object
    clashes = sorted(key for key in unknown if key in metadata)
    if clashes:
        raise ValueError(
            f"unknown field(s) {clashes} would overwrite the same key(s) in metadata; "
            "rename one of them"
        )
    known = {key: value for key, value in data.items() if key in cls.model_fields}
    return {**known, "metadata": {**metadata, **unknown}}


class Turn(Contract):
    """One utterance or message. Its position in `Conversation.turns` is its turn number."""

    # Unknown fields are accepted (and kept in metadata), so the published schema allows them.
    model_config = ConfigDict(json_schema_extra={"additionalProperties": True})

    role: Role
    text: str
    at: AwareDatetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _unknown_into_metadata(cls, data: Any) -> Any:
        return _keep_unknown_fields(cls, data)


class Event(Contract):
    """Something that happened during the conversation besides talk: a tool call, a transfer,
    a procedure starting or finishing, an error.

    Tool calls carry their arguments, result, success and duration; when the agent made the call
    while following a procedure, `procedure_name` and `procedure_step_order` say which step.
    """

    # Unknown fields are accepted (and kept in metadata), so the published schema allows them.
    model_config = ConfigDict(json_schema_extra={"additionalProperties": True})

    type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    name: str | None = None
    arguments: dict[str, Any] | None = None
    result: Any = None
    succeeded: bool | None = None
    duration_ms: NonNegativeInt | None = None
    at: AwareDatetime | None = None
    turn_index: NonNegativeInt | None = None
    procedure_name: str | None = None
    procedure_step_order: NonNegativeInt | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _unknown_into_metadata(cls, data: Any) -> Any:
        return _keep_unknown_fields(cls, data)


class Conversation(Contract):
    """A conversation between an AI agent and a customer, with its event log.

    Only `conversation_id` and `turns` are needed. `tenant_id` defaults to the intake source's
    tenant, else `default`; `agent_id` and `channel` may be absent; `started_at`/`ended_at` are
    taken from the first and last turn times when absent, and stay empty without them (never
    invented). `outcome` is any short string, kept verbatim; triggers match it ignoring case,
    spaces, dashes and underscores. Unknown fields are kept in `metadata`.
    """

    # Unknown fields are accepted (and kept in metadata), so the published schema allows them.
    model_config = ConfigDict(json_schema_extra={"additionalProperties": True})

    conversation_id: Identifier
    tenant_id: Identifier = DEFAULT_TENANT
    agent_id: Identifier | None = None
    agent_version: str | None = None
    channel: Channel | None = None
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    outcome: Outcome = "unknown"
    termination_reason: str | None = None
    turns: list[Turn] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    dynamic_variables: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _unknown_into_metadata(cls, data: Any) -> Any:
        return _keep_unknown_fields(cls, data)

    @model_validator(mode="before")
    @classmethod
    def _text_is_storable(cls, data: Any) -> Any:
        # Rejected at the contract, with the field named, so no intake path reaches a store
        # that would refuse it mid-batch (and print the text in its error).
        if isinstance(data, dict):
            raise_if_any(_unstorable_text(data))
        return data

    @model_validator(mode="after")
    def _times_from_turns(self) -> Conversation:
        # Exports without conversation times often time their turns; the first and last turn
        # times are then the best honest bounds. Without any, the times stay empty.
        if self.started_at is not None and self.ended_at is not None:
            return self
        times = [turn.at for turn in self.turns if turn.at is not None]
        if times:
            if self.started_at is None:
                object.__setattr__(self, "started_at", min(times))
            if self.ended_at is None:
                object.__setattr__(self, "ended_at", max(times))
        return self

    @model_validator(mode="after")
    def _check_consistency(self) -> Conversation:
        violations = []
        if (
            self.started_at is not None
            and self.ended_at is not None
            and self.ended_at < self.started_at
        ):
            violations.append(
                RuleViolation(
                    ("ended_at",),
                    "ended-after-started",
                    f"ended_at ({self.ended_at.isoformat()}) is before started_at "
                    f"({self.started_at.isoformat()})",
                )
            )
        for position, event in enumerate(self.events):
            if event.turn_index is not None and event.turn_index >= len(self.turns):
                violations.append(
                    RuleViolation(
                        ("events", position, "turn_index"),
                        "turn-index-in-range",
                        f"turn_index is {event.turn_index} but the conversation has "
                        f"{len(self.turns)} turn(s), numbered from 0",
                    )
                )
        raise_if_any(violations)
        return self

    @property
    def duration_seconds(self) -> float | None:
        """How long the conversation lasted; None when either end is unknown."""
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    def content_hash(self) -> str:
        """sha256 of the conversation as posthoc serialises it (fields in schema order, object
        keys as received): the transcript hash of results and of the ledger."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()
