"""Rerun jobs: which stored conversations a rerun selects, and what the job did.

`RerunSelection` is what `posthoc rerun` options, and a schedule's `rerun:` block, describe;
`JobSummary` is what `posthoc rerun --json` and `posthoc jobs show --json` print. Pure data:
selecting and running are in `worker/scheduling/`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, model_validator

from schemas._base import Contract

JobStatus = Literal["running", "done", "cancelled", "budget_exhausted"]
"""`running`: recorded and not finished (also while no process works on it: `--resume` it);
`done`: every selected conversation has its run; `cancelled`: `posthoc jobs cancel`;
`budget_exhausted`: it stopped recording new runs at `--budget-usd`."""

_Name = Annotated[str, Field(min_length=1, max_length=200)]


class RerunSelection(Contract):
    """Which analyzer version to run again, on which stored conversations.

    Every given criterion must hold. `since`/`until` bound when the conversation was last
    received (its newest version), `since` inclusive and `until` exclusive. `outcome` compares
    like trigger outcomes (case, spaces, dashes and underscores ignored). `where` is CEL over the
    conversation, as in triggers. `conversations` names conversation ids. `failed_only` keeps
    conversations whose latest run of this analyzer (any version) failed. The newest stored
    version of each selected conversation is analysed.
    """

    analyzer: _Name
    version: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    tenant: _Name | None = None
    agent: _Name | None = None
    outcome: _Name | None = None
    where: Annotated[str, Field(min_length=1, max_length=10_000)] | None = None
    conversations: list[_Name] = Field(default_factory=list, max_length=100_000)
    failed_only: bool = False

    @model_validator(mode="after")
    def _window_is_ordered(self) -> RerunSelection:
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError(
                f"until ({self.until.isoformat()}) must be after since ({self.since.isoformat()})"
            )
        return self


class JobSummary(Contract):
    """A rerun job's figures. `selected = recorded + skipped + pending`.

    `recorded`: runs the job recorded to execute; `skipped`: selected conversations that got no
    run to execute (the analyzer's trigger does not apply, or the job stopped at its budget or
    was cancelled before reaching them); `pending`: not reached yet (the job is still running or
    was interrupted: `--resume` it). `estimated_usd` is at the price the job runs at (the batch
    price with `batch`); `spent_usd` is what its runs spent so far.
    """

    job_id: str
    status: JobStatus
    analyzer: str
    analyzer_version: str
    selected: int = Field(ge=0)
    estimated_usd: float = Field(ge=0)
    estimated_batch_usd: float = Field(ge=0)
    recorded: int = Field(ge=0)
    skipped: int = Field(ge=0)
    pending: int = Field(ge=0)
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    in_flight: int = Field(ge=0)
    spent_usd: float = Field(ge=0)
    budget_usd: float | None = None
    batch: bool = False
    allow_writes: bool = False
