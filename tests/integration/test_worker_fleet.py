"""A fleet of real `posthoc worker` processes on Redis and on RabbitMQ, with a PostgreSQL ledger
and the fake Messages API (latency per model turn), shows the design's promise: a killed
worker, a redelivered message or a Redis visibility timeout never loses or duplicates a run.

Workers run with short leases (10 s), heartbeats and sweeps (1 s) and stale-queued resends
(3 s), so recovery takes seconds; every wait polls the ledger against a deadline.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection

from tests.integration.conftest import (
    LOOPBACK_ONLY,
    PYTHON,
    REDIS_URL,
    Broker,
    Fake,
    Fleet,
    PacedAnalyst,
    Submitted,
    Worker,
    outcomes,
    record_runs,
    send,
    wait_for,
)
from worker.ledger import Ledger

pytestmark = pytest.mark.integration

FINISHED = ("succeeded", "failed", "skipped")


def finished(ledger: Ledger, runs: list[Submitted]) -> int:
    return sum(ledger.get_run(run.run_id).status in FINISHED for run in runs)


def summaries(workers: list[Worker], run_id: str) -> list[dict[str, object]]:
    """Every `run.finished` line any worker logged for the run."""
    return [e for w in workers for e in w.events("run.finished") if e.get("run_id") == run_id]


def noops(workers: list[Worker], run_id: str) -> int:
    return sum(1 for w in workers for e in w.events("run.noop") if e.get("run_id") == run_id)


def test_workers_can_reach_nothing_but_loopback(tmp_path: Path) -> None:
    """The environment workers get refuses connections and lookups beyond this machine, and
    still reaches local services."""
    fleet = Fleet(
        tmp_path,
        Broker("redis", REDIS_URL, "unused"),
        "postgresql+psycopg://postgres@127.0.0.1:5432/unused",
        Fake("http://127.0.0.1:9", PacedAnalyst(latency=0)),
    )
    env = fleet.environment(concurrency=1)
    assert env["PYTHONPATH"] == str(LOOPBACK_ONLY)
    assert not any(name.lower().endswith("_proxy") for name in env)
    probe = (
        "import socket\n"
        "for target in [('192.0.2.1', 443), ('posthoc.invalid', 443)]:\n"
        "    try:\n"
        "        socket.create_connection(target, timeout=2)\n"
        "    except PermissionError as error:\n"
        "        print('refused', error)\n"
        "server = socket.create_server(('127.0.0.1', 0))\n"
        "socket.create_connection(server.getsockname(), timeout=2).close()\n"
        "print('loopback ok')\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter, a fixed script
        [str(PYTHON), "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines() == [
        "refused [Errno 13] loopback only (tests/integration): refused a lookup of '192.0.2.1'",
        "refused [Errno 13] loopback only (tests/integration): refused a lookup of "
        "'posthoc.invalid'",
        "loopback ok",
    ]


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    fleet: Fleet, ledger: Ledger, sender: Celery, fake_model: Fake
) -> None:
    """Worker A is SIGKILLed with three analyses in flight (and more reserved); worker B then
    finishes everything. Every run succeeds exactly once: one result, one success in the
    attempts, the killed claims marked `expired`, and the fake model completed no analysis twice
    except, at most, the killed ones."""
    first = fleet.start("A", concurrency=3)
    runs = record_runs(ledger, 8)
    conversation_of = {run.run_id: run.conversation_id for run in runs}
    send(sender, list(conversation_of))

    def in_flight_on_first() -> set[str]:
        return {
            run.id
            for run in ledger.list_runs("running")
            if (run.lease_owner or "").startswith(first.lease_prefix)
            and fake_model.analyst.turns_seen(conversation_of[run.id])[0] >= 1
        }

    wait_for(
        lambda: len(in_flight_on_first()) >= 3,
        timeout=60,
        what="worker A to have three analyses talking to the model",
        fleet=fleet,
    )
    in_flight = in_flight_on_first()
    first.kill()
    second = fleet.start("B", concurrency=4)
    wait_for(
        lambda: finished(ledger, runs) == len(runs),
        timeout=90,
        what="every run to finish after worker A was killed",
        fleet=fleet,
    )

    killed = set()
    for run in runs:
        attempts = ledger.attempts(run.run_id)
        assert ledger.get_run(run.run_id).status == "succeeded", attempts
        if attempts[0].worker_id.startswith(first.lease_prefix) and len(attempts) > 1:
            killed.add(run.run_id)
            assert outcomes(attempts) == ["expired", "succeeded"]
            assert attempts[0].error_type == "lease_expired"
            assert attempts[1].worker_id.startswith(second.lease_prefix)
        else:
            assert outcomes(attempts) == ["succeeded"], attempts
        assert [s["status"] for s in summaries(fleet.workers, run.run_id)] == ["succeeded"]
    assert killed == in_flight

    results = ledger.results(list(conversation_of))
    assert sorted(result.run_id for result in results) == sorted(conversation_of)
    assert all(result.status == "succeeded" and result.outputs for result in results)

    completed = Counter[str]()
    for run in runs:
        seen = fake_model.analyst.turns_seen(run.conversation_id)
        completed[run.run_id] = seen[-1]
        if run.run_id in killed:
            assert seen[0] == 2, seen  # A's attempt started; B's ran from the start
            assert all(1 <= count <= 2 for count in seen), seen
        else:
            assert seen == [1, 1, 1], (run, seen)
    assert sum(completed.values()) <= len(runs) + len(killed)


def test_a_redelivered_message_is_a_noop(
    fleet: Fleet, ledger: Ledger, sender: Celery, fake_model: Fake
) -> None:
    """The same run id sent twice at once (one copy finds the run leased) and once more after
    it finished (the run is done): one attempt, one result, one analysis at the model."""
    worker = fleet.start("solo", concurrency=2)
    [run] = record_runs(ledger, 1)
    send(sender, [run.run_id, run.run_id])
    wait_for(
        lambda: ledger.get_run(run.run_id).status in FINISHED and noops([worker], run.run_id) >= 1,
        timeout=60,
        what="the run to finish and its duplicate message to be a no-op",
        fleet=fleet,
    )
    send(sender, [run.run_id])
    wait_for(
        lambda: noops([worker], run.run_id) >= 2,
        timeout=30,
        what="the late duplicate to be a no-op",
        fleet=fleet,
    )

    assert ledger.get_run(run.run_id).status == "succeeded"
    assert outcomes(ledger.attempts(run.run_id)) == ["succeeded"]
    assert [r.run_id for r in ledger.results([run.run_id])] == [run.run_id]
    assert fake_model.analyst.turns_seen(run.conversation_id) == [1, 1, 1]
    assert len(summaries([worker], run.run_id)) == 1


def _unacked_payloads(client: redis.Redis) -> list[bytes]:
    """Every message kombu holds as fetched-but-unacked on this Redis (all queues)."""
    return [p if isinstance(p, bytes) else p.encode() for p in client.hvals("unacked")]


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
def test_a_run_longer_than_the_redis_visibility_timeout_runs_once(
    fleet: Fleet, ledger: Ledger, sender: Celery, fake_model: Fake, broker: Broker
) -> None:
    """Workers with a 3 s visibility timeout run a 7.5 s analysis. When a Redis restore sweep
    runs (kombu's `restore_visible`, as any consumer of this Redis runs it, here called by the
    test so it does not wait for kombu's ~100 s cadence), a control message held unacked on
    another queue does come back, but the run's message does not: it was acknowledged when the
    task started. The run is claimed once and the model sees it once."""
    fake_model.analyst.latency = 2.5
    workers = [
        fleet.start(name, concurrency=2, visibility_timeout_seconds="3") for name in ("V1", "V2")
    ]
    [run] = record_runs(ledger, 1)
    control_queue = f"posthoc.test.control.{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(REDIS_URL)
    connection = Connection(REDIS_URL, transport_options={"visibility_timeout": 3})
    try:
        control = connection.SimpleQueue(control_queue)
        control.put({"control": True})
        control.get(timeout=10)  # fetched and never acked: Redis holds it as unacked
        held_at = time.monotonic()
        send(sender, [run.run_id])
        wait_for(
            lambda: ledger.get_run(run.run_id).status == "running",
            timeout=60,
            what="a worker to claim the run",
            fleet=fleet,
        )
        time.sleep(max(0.0, held_at + 4.0 - time.monotonic()))
        assert ledger.get_run(run.run_id).status == "running"  # still going, past the timeout

        channel: Any = connection.default_channel
        qos = channel.qos
        qos.restore_visible(num=10_000, interval=1)

        assert client.llen(control_queue) == 1, "the restore sweep must bring back unacked"
        assert not any(run.run_id.encode() in p for p in _unacked_payloads(client))
        assert client.llen(broker.queue) == 0
        wait_for(
            lambda: ledger.get_run(run.run_id).status in FINISHED,
            timeout=60,
            what="the long run to finish",
            fleet=fleet,
        )
        time.sleep(3.5)
        qos.restore_visible(num=10_000, interval=1)
        time.sleep(2.0)  # room for a worker to pick up anything restored
        control.close()
    finally:
        client.delete(control_queue, f"_kombu.binding.{control_queue}")
        client.close()
        connection.close()

    assert ledger.get_run(run.run_id).status == "succeeded"
    assert outcomes(ledger.attempts(run.run_id)) == ["succeeded"]
    assert fake_model.analyst.turns_seen(run.conversation_id) == [1, 1, 1]
    assert noops(workers, run.run_id) == 0  # no second delivery reached any worker
    assert len(summaries(workers, run.run_id)) == 1
