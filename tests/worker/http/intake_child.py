"""The process the intake kill test SIGKILLs: the `posthoc serve` app on a SQLite ledger, killed
in its writer thread just before, or just after, the first batch of deliveries commits.

    python -m tests.worker.http.intake_child DATABASE_URL PORT_FILE before|after

It writes the port it listens on to PORT_FILE once it is up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import uvicorn

from tests.worker.http.conftest import SOURCES
from tests.worker.http.payloads import NOW
from worker.catalog import Catalog
from worker.http.app import Intake, create_app
from worker.http.group_commit import CommitHooks
from worker.http.sources import parse_sources
from worker.ledger import Ledger


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(database_url: str, port_file: str, moment: str) -> None:
    hooks = (
        CommitHooks(before_commit=_die) if moment == "before" else CommitHooks(after_commit=_die)
    )
    intake = Intake(
        ledger=Ledger.from_url(database_url),
        catalog=Catalog.load(),
        enqueue=lambda _: None,
        sources=parse_sources(json.dumps(SOURCES)),
        clock=lambda: NOW,
        commit_hooks=hooks,
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(listener.getsockname()[1]))
    config = uvicorn.Config(create_app(intake), log_config=None, access_log=False)
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main(*sys.argv[1:])
