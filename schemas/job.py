"""What travels on the queue: only a run id. The ledger holds everything else."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas._base import Contract


class RunMessage(Contract):
    """The body of a queue message: run this analysis run, whose details are in the ledger."""

    schema_version: Literal[1] = 1
    run_id: str = Field(min_length=1, max_length=64)
