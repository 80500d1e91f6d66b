"""The process the rerun kill test SIGKILLs: runs one rerun job through `JobRunner`.

    python -m tests.worker.scheduling.rerun_child DATABASE_URL JOB_ID

Its model takes a few milliseconds a turn, so the parent can kill it halfway through the job,
with runs in flight.
"""

from __future__ import annotations

import asyncio
import sys

from analyzers.model.protocol import ModelRequest, ModelTurn
from tests.worker.scheduling.helpers import PolicyModel, engine_config
from worker.catalog import Catalog
from worker.ledger import Ledger
from worker.scheduling import JobRunner, runner_identity


class SlowPolicyModel(PolicyModel):
    async def complete(self, request: ModelRequest) -> ModelTurn:
        await asyncio.sleep(0.005)
        return await super().complete(request)


def main(database_url: str, job_id: str) -> None:
    with Ledger.from_url(database_url) as ledger:
        runner = JobRunner(
            ledger=ledger,
            catalog=Catalog.load(),
            model=SlowPolicyModel(),
            config=engine_config(runner_identity()),
            concurrency=8,
        )
        print(asyncio.run(runner.run(job_id)).model_dump_json(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
