"""Chaos: a fleet of real `posthoc worker` processes on the test's own Redis, a PostgreSQL
ledger and the fake model, losing two workers to SIGKILL and the broker to a restart while it
works through a backlog.

Every run must end exactly once (one succeeded attempt, one result), nothing may stay queued or
running, no run may cost more than two messages (counted on the run: `enqueue_count`, and
across the fleet: the messages the workers received), and a killed worker's runs must start
again within two lease periods of the kill, although a backlog is waiting in the queue.

The CI variant runs 120 runs; `POSTHOC_CHAOS_RUNS=500` runs the long one (the issue's figure).
A supervisor is played by the test: a killed worker is replaced at once, a worker that exits
(status 75, not consuming) likewise.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.conftest import (
    Broker,
    Fake,
    Fleet,
    Submitted,
    Worker,
    record_runs,
    wait_for,
)
from tests.integration.outages import OwnRedis
from worker.engine.celery_app import create_celery, enqueue_with
from worker.ledger import Ledger
from worker.ledger.tables import analysis_runs
from worker.settings import Settings

pytestmark = pytest.mark.integration

RUNS = int(os.environ.get("POSTHOC_CHAOS_RUNS", "120"))
LEASE_SECONDS = 10
CONCURRENCY = 3


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    try:
        server.start()
    except (FileNotFoundError, RuntimeError) as error:
        pytest.skip(f"cannot start a redis-server of the test's own: {error}")
    try:
        yield server
    finally:
        server.kill()


class Supervisor:
    """Keeps three workers alive, as systemd or Kubernetes would."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.live: list[Worker] = []
        self.started = 0

    def start(self) -> Worker:
        self.started += 1
        worker = self.fleet.start(
            f"w{self.started}",
            concurrency=CONCURRENCY,
            lease_seconds=str(LEASE_SECONDS),
            stale_queued_seconds="20",
            consumer_stall_seconds="3",
        )
        self.live.append(worker)
        return worker

    def replace_exited(self) -> None:
        for worker in list(self.live):
            if worker.process.poll() is not None:
                self.live.remove(worker)
                self.start()

    def in_flight(self, ledger: Ledger, worker: Worker) -> int:
        running = ledger.list_runs("running", limit=10_000)
        return sum((r.lease_owner or "").startswith(worker.lease_prefix) for r in running)

    def kill_busiest(self, ledger: Ledger) -> tuple[Worker, datetime]:
        """SIGKILL the worker with the most runs in flight (waiting until one has some: after
        the broker restart the workers may still be reconnecting)."""
        wait_for(
            lambda: any(self.in_flight(ledger, w) > 0 for w in self.live),
            timeout=60,
            what="a worker with runs in flight",
            fleet=self.fleet,
        )
        worker = max(self.live, key=lambda w: self.in_flight(ledger, w))
        worker.kill()
        killed_at = datetime.now(UTC)
        self.live.remove(worker)
        self.start()
        return worker, killed_at


def test_chaos_every_run_ends_exactly_once(
    tmp_path: Path, own_redis: OwnRedis, database_url: str, ledger: Ledger, fake_model: Fake
) -> None:
    fake_model.analyst.latency = 1.0
    fleet = Fleet(
        tmp_path, Broker("redis", own_redis.url, "posthoc.chaos"), database_url, fake_model
    )
    supervisor = Supervisor(fleet)
    app = create_celery(Settings(broker_url=own_redis.url, queue="posthoc.chaos"))
    try:
        for _ in range(3):
            supervisor.start()
        runs: list[Submitted] = []
        enqueue = enqueue_with(app, ledger)
        for _ in range(0, RUNS, 20):  # as intake does: record a batch, enqueue it
            batch = record_runs(ledger, min(20, RUNS - len(runs)))
            enqueue([run.run_id for run in batch])
            runs += batch

        def done() -> int:
            counts = ledger.counts_by_status()
            return sum(counts.get(s, 0) for s in ("succeeded", "failed", "skipped"))

        def progress(fraction: float, what: str) -> None:
            def reached() -> bool:
                supervisor.replace_exited()
                return done() >= RUNS * fraction

            wait_for(reached, timeout=120 + RUNS, what=what, fleet=fleet)

        def wait_taken_over(killed: Worker) -> None:
            """Wait until none of the killed worker's runs is left with its dead lease (the
            kills and the outage must not overlap: a takeover needs a broker to travel on)."""

            def none_left() -> bool:
                supervisor.replace_exited()
                running = ledger.list_runs("running", limit=10_000)
                return not any(
                    (r.lease_owner or "").startswith(killed.lease_prefix) for r in running
                )

            wait_for(none_left, timeout=60, what=f"{killed.name}'s runs taken over", fleet=fleet)

        progress(0.1, "a tenth of the runs")
        first, first_at = supervisor.kill_busiest(ledger)
        wait_taken_over(first)
        own_redis.kill()
        time.sleep(12)
        own_redis.start()
        progress(0.5, "half of the runs after the broker restart")
        second, second_at = supervisor.kill_busiest(ledger)
        wait_taken_over(second)
        backlog_at_second_takeover = RUNS - done()
        progress(1.0, "every run to finish")
    finally:
        app.close()
        fleet.kill_all()

    # Every run ends exactly once.
    for run in runs:
        record = ledger.get_run(run.run_id)
        attempts = ledger.attempts(run.run_id)
        assert record.status == "succeeded", (run, attempts)
        assert [a.outcome for a in attempts].count("succeeded") == 1, attempts
        assert all(a.outcome in ("succeeded", "expired") for a in attempts), attempts
    results = ledger.results([run.run_id for run in runs])
    assert sorted(r.run_id for r in results) == sorted(run.run_id for run in runs)
    assert ledger.counts_by_status().get("queued", 0) == 0
    assert ledger.counts_by_status().get("running", 0) == 0

    # At most two messages per run, by the ledger's count and by what the workers received.
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            counts = dict(
                connection.execute(
                    sa.select(analysis_runs.c.id, analysis_runs.c.enqueue_count)
                ).all()
            )
    finally:
        engine.dispose()
    assert set(counts) == {run.run_id for run in runs}
    over = {
        run_id: [
            (a.worker_id, a.outcome, a.started_at.isoformat()) for a in ledger.attempts(run_id)
        ]
        for run_id, count in counts.items()
        if count > 2
    }
    assert not over, (over, first.lease_prefix, first_at, second.lease_prefix, second_at)
    received = sum(
        1
        for worker in fleet.workers
        for event in worker.events()
        if str(event.get("event", "")).startswith("Task posthoc.run_analysis[")
        and str(event.get("event", "")).endswith("] received")
    )
    assert RUNS <= received <= 2 * RUNS

    # A killed worker's runs start again within two lease periods, behind the backlog.
    for killed, killed_at in ((first, first_at), (second, second_at)):
        taken_over = 0
        for run in runs:
            attempts = ledger.attempts(run.run_id)
            for lost, after in itertools.pairwise(attempts):
                if lost.worker_id.startswith(killed.lease_prefix) and lost.outcome == "expired":
                    taken_over += 1
                    assert after.started_at - killed_at <= timedelta(seconds=2 * LEASE_SECONDS)
        assert taken_over >= 1, f"{killed.name} had no run in flight when it was killed"
    assert backlog_at_second_takeover > 0  # the takeover did not wait for the backlog
    print(
        f"chaos: {RUNS} runs, workers started {supervisor.started}, messages received "
        f"{received}, max per run {max(counts.values())}, runs still waiting when the second "
        f"worker's runs were taken over: {backlog_at_second_takeover}"
    )
