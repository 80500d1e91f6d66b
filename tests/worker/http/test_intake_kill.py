"""The intake process killed at the worst moments of a group commit: just before the batch
commits (nothing is recorded, and the redelivery records it) and just after, before any answer
(the redelivery answers 200 with the runs that were recorded, and they are tracked as sent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.worker.http.payloads import body_of, retell_headers, retell_payload
from tests.worker.http.server import Server, serving
from worker.http.app import Intake
from worker.ledger import Ledger
from worker.ledger.tables import analysis_runs, webhook_deliveries

ROOT = Path(__file__).resolve().parents[3]


def start_child(
    database_url: str, tmp_path: Path, moment: str
) -> tuple[subprocess.Popen[bytes], Server]:
    port_file = tmp_path / f"port-{moment}"
    output = tmp_path / f"child-{moment}.log"
    with output.open("wb") as out:
        child = subprocess.Popen(  # noqa: S603 - our own test module, fixed arguments
            [
                sys.executable,
                "-m",
                "tests.worker.http.intake_child",
                database_url,
                str(port_file),
                moment,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    server = None
    while server is None:
        assert child.poll() is None, output.read_text()
        assert time.monotonic() < deadline, "the intake child did not start"
        if port_file.exists() and port_file.read_text():
            candidate = Server(f"http://127.0.0.1:{port_file.read_text()}")
            try:
                candidate.request("GET", "/healthz")
                server = candidate
            except OSError:
                pass
        time.sleep(0.05)
    return child, server


@pytest.mark.parametrize("moment", ["before", "after"])
def test_killed_around_the_commit_the_redelivery_answers_as_the_ledger_says(
    moment: str, tmp_path: Path, ledger: Ledger, intake: Intake
) -> None:
    planned = len(intake.catalog.select(None))  # a run per conversation analyzer
    database_url = ledger.engine.url.render_as_string(hide_password=False)
    child, doomed = start_child(database_url, tmp_path, moment)
    body = body_of(retell_payload("call-killed"))
    headers = retell_headers(body, "key_new")
    try:
        # The connection drops: no answer was sent.
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            doomed.request("POST", "/v1/webhooks/rt", body, headers)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    with ledger.engine.connect() as connection:
        runs = connection.execute(sa.select(analysis_runs)).all()
        log = connection.execute(sa.select(webhook_deliveries)).all()

    with serving(intake) as server:  # the platform delivers again, to a new process
        again = server.request("POST", "/v1/webhooks/rt", body, headers)

    if moment == "before":
        assert (runs, log) == ([], [])
        assert again.status == 202, again.body
        assert len(again.body["run_ids"]) == planned
    else:
        assert len(runs) == planned
        [claim] = log
        assert (claim.outcome, sorted(claim.run_ids)) == ("accepted", sorted(r.id for r in runs))
        # Never published (the process died first), but recorded as sent: the sweeper's
        # lost-message rule sends them again.
        queued = [r for r in runs if r.status == "queued"]
        assert queued
        assert all(r.enqueue_count == 1 and r.enqueued_at is not None for r in queued)
        assert again.status == 200, again.body
        assert sorted(again.body["run_ids"]) == sorted(r.id for r in runs)
    with ledger.engine.connect() as connection:
        total = connection.execute(sa.select(sa.func.count()).select_from(analysis_runs)).scalar()
    assert total == planned
