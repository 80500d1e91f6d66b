"""AnalyzerSnapshot: an analyzer exactly as it was when a run was recorded.

A run is recorded against a snapshot, and the worker runs the snapshot, never the analyzer that
happens to be loaded when it claims the run: a YAML edited (or a procedure upgraded) between
recording and running changes nothing for that run. Snapshots are content-addressed: `spec_hash`
is the sha256 of the snapshot's canonical JSON, so identical snapshots are stored once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field

from schemas._base import Contract
from schemas.analyzer import AnalyzerSpec
from schemas.procedure import Procedure

SNAPSHOT_FORMAT: Literal[1] = 1
"""Bumped when what a snapshot holds changes, so old and new snapshots never share a hash."""


class AnalyzerSnapshot(Contract):
    """Everything that shapes one analyzer's prompt and outputs, frozen at record time.

    - `spec`: the analyzer file as loaded (instructions, outputs and their schemas, tools, model
      settings, sinks).
    - `procedures`: each procedure the spec names, resolved to the version current at record
      time for the conversation's tenant and agent (the newest approved version in scope).
    - `brief`: the analyzer's own part of the prompt, rendered for the procedures that applied
      to the conversation version the run was recorded for (see `analyzers.runtime.snapshot`).
    - `tool_definitions`: the definitions of the tools the analyzer may call and of its output
      tools, as sent to the model, sorted by name.
    """

    format: Literal[1] = SNAPSHOT_FORMAT
    spec: AnalyzerSpec
    procedures: list[Procedure] = Field(default_factory=list)
    brief: str
    tool_definitions: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def analyzer(self) -> str:
        """The analyzer's name."""
        return self.spec.name

    @property
    def analyzer_version(self) -> str:
        """The analyzer's version."""
        return self.spec.version

    def spec_hash(self) -> str:
        """sha256 (hex) of the canonical JSON of the whole snapshot."""
        return content_hash(self.model_dump(mode="json", by_alias=True))


def content_hash(value: Any) -> str:
    """sha256 (hex) of `value` as canonical JSON: sorted keys, no insignificant whitespace."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
