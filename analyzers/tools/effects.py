"""Effects: what a write-effect HTTP call did, kept so a retried run never does it twice.

A write call (`HttpTool.effect == "write"`) gets an idempotency key derived from where it happens
in the run: (run id, procedure, step, call number) for a call made while a procedure step runs,
(run id, tool, call number among that tool's writes) otherwise. The same run retried makes the
same calls in the same places, so it derives the same keys.

The call is recorded as `pending` BEFORE the request goes out and `done` with its outcome after.
So a retried run finds one of three things under a key:
- nothing: the call was never attempted; make it;
- `done`: replay the recorded outcome, do not call again;
- `pending`: the request may have reached the server but its outcome was never recorded (the
  process died, the answer was lost): send it again with the SAME key, so the server deduplicates.

The store is a protocol so the runtime does not know where records live: the worker keeps them in
its ledger (`worker.ledger.effects`), `InMemoryEffectStore` serves a run without a ledger.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

EffectState = Literal["pending", "done"]

KEY_PREFIX = "posthoc-"


@dataclass(frozen=True)
class EffectRecord:
    """One write call as the store keeps it. `output` is already redacted of secrets.

    `fingerprint` identifies the request (method, URL and body, without secrets), so a different
    request made at the same place on a retry is not mistaken for the recorded one. `sends`
    counts how many times the request was sent under this key.
    """

    key: str
    run_id: str
    tool_name: str
    scope: str
    call_number: int
    method: str
    url: str
    fingerprint: str
    state: EffectState = "pending"
    output: Any = None
    is_error: bool = False
    status_code: int | None = None
    sends: int = 1


class EffectStore(Protocol):
    """Where write effects are recorded; one store may serve many runs at once."""

    async def lookup(self, key: str) -> EffectRecord | None:
        """The record under `key`, or None when no call was ever attempted under it."""
        ...

    async def record_pending(self, record: EffectRecord) -> EffectRecord:
        """Note that the request is about to be sent (call before sending).

        A new key is stored as given; an existing pending one has its `sends` counted up.
        Returns what is stored now.
        """
        ...

    async def record_outcome(
        self, key: str, *, output: Any, is_error: bool, status_code: int | None
    ) -> None:
        """Store the outcome the server gave (call after the answer came back)."""
        ...


@dataclass
class InMemoryEffectStore:
    """An `EffectStore` in a dict: for runs without a ledger, and tests."""

    records: dict[str, EffectRecord] = field(default_factory=dict)

    async def lookup(self, key: str) -> EffectRecord | None:
        """The record under `key`, if any."""
        return self.records.get(key)

    async def record_pending(self, record: EffectRecord) -> EffectRecord:
        """Store `record`, or count one more send of the pending one under its key."""
        known = self.records.get(record.key)
        stored = record if known is None else replace(known, sends=known.sends + 1)
        self.records[record.key] = stored
        return stored

    async def record_outcome(
        self, key: str, *, output: Any, is_error: bool, status_code: int | None
    ) -> None:
        """Mark the effect under `key` done with its outcome."""
        known = self.records[key]
        self.records[key] = replace(
            known, state="done", output=output, is_error=is_error, status_code=status_code
        )


def effect_scope(tool_name: str, procedure_step: tuple[str, int] | None) -> str:
    """Where in a run a write happens: a procedure step, or the tool itself outside procedures."""
    if procedure_step is not None:
        name, order = procedure_step
        return f"procedure:{name}:step:{order}"
    return f"tool:{tool_name}"


def idempotency_key(run_id: str, scope: str, call_number: int) -> str:
    """The key a write sends: the same run, place and call number always give the same key.

    Hashed so that no name from the analyzer ends up in a header the remote system stores.
    """
    digest = hashlib.sha256(f"{run_id}\x1f{scope}\x1f{call_number}".encode()).hexdigest()
    return KEY_PREFIX + digest[:40]


def variant_key(key: str, fingerprint: str) -> str:
    """The key for a different request made where another one was recorded under `key`."""
    return f"{key}.{fingerprint[:16]}"


def request_fingerprint(method: str, url: str, body: Any) -> str:
    """A digest of what a request asks for (callers pass secrets already redacted)."""
    canonical = json.dumps([method, url, body], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class RunEffects:
    """One run's view of its effects: the store, its run id and the write counters.

    Built afresh whenever the runtime starts the run's conversation over (a context overflow):
    the counters restart, so the same calls derive the same keys and replay from the store.
    """

    run_id: str
    store: EffectStore = field(default_factory=InMemoryEffectStore)
    dry_run: bool = False
    unresolved: dict[str, str] = field(default_factory=dict)
    """Key by request fingerprint of writes sent in this run whose outcome is still unknown:
    the same request made again reuses the key instead of counting a new call."""
    _counts: dict[str, int] = field(default_factory=dict)

    def next_call(self, scope: str) -> int:
        """Count one more write in `scope`; returns its number, from 1."""
        self._counts[scope] = self._counts.get(scope, 0) + 1
        return self._counts[scope]
