"""`posthoc worker --processes 2` on Redis with a PostgreSQL ledger: the supervisor replaces a
SIGKILLed child, SIGTERM drains both children (no run left leased), and no run is analysed
twice across them (the fake model counts every request per conversation and turn)."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    HOST,
    REDIS_URL,
    Broker,
    Fake,
    Fleet,
    _check_redis,
    _delete_queue,
    record_runs,
    wait_for,
)
from tests.integration.outages import free_port
from worker.engine.celery_app import create_celery, enqueue_with
from worker.ledger import Ledger
from worker.settings import Settings

pytestmark = pytest.mark.integration
RUNS = 10


@pytest.fixture
def node(tmp_path: Path, database_url: str, fake_model: Fake) -> Iterator[Fleet]:
    _check_redis()
    broker = Broker("redis", REDIS_URL, f"posthoc.test.{uuid.uuid4().hex[:10]}")
    fleet = Fleet(tmp_path, broker, database_url, fake_model)
    try:
        yield fleet
    finally:
        fleet.kill_all()
        _delete_queue(broker)


def health(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


def children(port: int) -> list[dict[str, object]]:
    found = health(port)[1].get("children", [])
    assert isinstance(found, list)
    return found


def metric_total(port: int, name: str) -> float:
    """The sum of every sample of `name` on the node's `/metrics` (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as answer:
        text = answer.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((f"{name} ", f"{name}{{"))
    )


def test_two_processes_replace_a_killed_child_drain_on_sigterm_and_run_nothing_twice(
    node: Fleet, ledger: Ledger
) -> None:
    port = free_port()
    worker = node.start(
        "node", concurrency=6, processes="2", health_port=str(port), start_jitter_seconds="0"
    )
    wait_for(
        lambda: health(port)[0] == 200, timeout=90, what="both children to consume", fleet=node
    )
    before = children(port)
    assert [child["index"] for child in before] == [0, 1]
    assert all(child["concurrency"] == 3 for child in before)
    killed = before[0]["pid"]
    assert isinstance(killed, int)
    assert killed != worker.pid  # a child, not the supervisor

    os.kill(killed, signal.SIGKILL)
    wait_for(
        lambda: (
            children(port)[0]["pid"] not in (None, killed)
            and children(port)[0]["restarts"] == 1
            and health(port)[0] == 200
        ),
        timeout=90,
        what="the killed child to be replaced and consume",
        fleet=node,
    )
    assert worker.process.poll() is None
    pids = {child["pid"] for child in children(port)}
    # The node's /metrics sums its children; the killed child's free slots no longer count.
    wait_for(
        lambda: metric_total(port, "posthoc_worker_free_slots") == 6,
        timeout=30,
        what="the node's metrics to count each live child's slots once",
        fleet=node,
    )

    runs = record_runs(ledger, RUNS)
    app = create_celery(Settings(broker_url=node.broker.url, queue=node.broker.queue))
    try:
        enqueue_with(app, ledger)([run.run_id for run in runs])
    finally:
        app.close()
    wait_for(
        lambda: ledger.counts_by_status()["running"] >= 4,
        timeout=60,
        what="runs in flight on both children",
        fleet=node,
    )
    in_flight = [r.id for r in ledger.list_runs(status="running", limit=RUNS)]

    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=90) == 0, node.logs()

    states = {run.run_id: ledger.get_run(run.run_id) for run in runs}
    # Drained: nothing left leased; a run in flight finished, or (past the drain time) was
    # handed back queued; no run was claimed twice or had a model turn answered twice.
    assert [r.id for r in states.values() if r.status == "running"] == []
    assert any(states[run_id].status == "succeeded" for run_id in in_flight)
    owners = set()
    for run in runs:
        record = states[run.run_id]
        assert record.status in {"succeeded", "queued"}, (record.status, record.error_message)
        assert record.attempts <= 1
        for attempt in ledger.attempts(run.run_id):
            owners.add(int(attempt.worker_id.removeprefix(f"{HOST}:").split(":")[0]))
        seen = node.fake.analyst.turns_seen(run.conversation_id)
        assert max(seen) <= 1, seen
        if record.status == "succeeded":
            assert seen == [1, 1, 1]
    assert owners == pids  # both children worked, under their own pids
