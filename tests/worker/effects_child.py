"""The process the kill test SIGKILLs: one run of the example analyzer through the real engine.

    python -m tests.worker.effects_child DATABASE_URL DEFINITIONS_DIR RUN_ID

It runs until the CRM holds its ticket request, and is killed there: after the request was
sent, before its outcome could be recorded.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.worker.effects_world import SECRETS, ProcedureFollower
from worker.catalog import Catalog
from worker.engine.runner import Engine, EngineConfig
from worker.http_transport import HttpxTransport
from worker.ledger import Ledger


async def _process(ledger: Ledger, catalog: Catalog, run_id: str) -> str:
    async with HttpxTransport() as transport:
        engine = Engine(
            ledger=ledger,
            catalog=catalog,
            model=ProcedureFollower(),
            http=transport,
            secrets=SECRETS,
            config=EngineConfig(worker_id="doomed:1", default_model="claude-sonnet-5-5"),
        )
        return (await engine.process(run_id)).status


def main(database_url: str, definitions: str, run_id: str) -> None:
    folder = Path(definitions)
    catalog = Catalog.load([folder / "analyzers"], [folder / "procedures"], builtins=False)
    with Ledger.from_url(database_url) as ledger:
        print(asyncio.run(_process(ledger, catalog, run_id)), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
