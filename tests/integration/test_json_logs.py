"""With `POSTHOC_LOG_FORMAT=json`, every line a `posthoc worker` process writes is one JSON
object: posthoc's own events, Celery's (connection, task received/succeeded, shutdown) and the
libraries' and Python's warnings alike, none interleaved with another."""

from __future__ import annotations

import json
import signal

import pytest
from celery import Celery

from tests.integration.conftest import Fleet, record_runs, send, wait_for
from worker.ledger import Ledger

pytestmark = pytest.mark.integration


def test_every_line_a_worker_writes_is_json(fleet: Fleet, ledger: Ledger, sender: Celery) -> None:
    worker = fleet.start("json", concurrency=4)
    runs = record_runs(ledger, 6)
    send(sender, [run.run_id for run in runs])
    wait_for(
        lambda: all(ledger.get_run(run.run_id).status == "succeeded" for run in runs),
        timeout=90,
        what="the runs to finish",
        fleet=fleet,
    )
    worker.process.send_signal(signal.SIGTERM)  # warm shutdown: Celery logs on the way out
    assert worker.process.wait(timeout=60) == 0

    lines = worker.log.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"line {number} of {len(lines)} is not JSON: {line[:200]!r}")
        assert isinstance(record, dict), line
        assert {"event", "level", "timestamp"} <= record.keys(), record
        records.append(record)
    loggers = {str(record.get("logger")) for record in records}
    events = [str(record["event"]) for record in records]
    assert any(name.startswith("celery.") for name in loggers), loggers
    assert sum(event == "run.finished" for event in events) == len(runs)
    assert sum(event.endswith("] received") for event in events) >= len(runs)
    assert any("ready" in event for event in events)
