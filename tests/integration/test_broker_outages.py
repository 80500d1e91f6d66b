"""Broker outages under busy `posthoc worker` processes.

Redis: the test's own `redis-server` (never the shared one) is SIGKILLed while the worker has
every slot busy and more messages reserved, and started again on the same port 15 s later.
RabbitMQ: a loopback proxy the test controls sits between the worker and the shared node; it
drops every connection and refuses new ones for 12 s. Either way the worker must consume again
(it did not: it stayed alive, logged `Couldn't ack` and never fetched another message), the
health port must say 503 during the gap and 200 after, and every run must finish exactly once.
A worker that cannot get back within `POSTHOC_NOT_CONSUMING_EXIT_SECONDS` exits with status 75,
and a restarted one (what a supervisor does) finishes the work.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    AMQP_URL,
    Broker,
    Fake,
    Fleet,
    Submitted,
    Worker,
    _check_rabbitmq,
    _delete_queue,
    outcomes,
    record_runs,
    wait_for,
)
from tests.integration.outages import CuttableProxy, OwnRedis, free_port
from worker.engine.celery_app import create_celery, enqueue_with
from worker.engine.liveness import EXIT_NOT_CONSUMING
from worker.ledger import Ledger
from worker.settings import Settings

pytestmark = pytest.mark.integration
FINISHED = ("succeeded", "failed", "skipped")
RUNS = 14


def finished(ledger: Ledger, runs: list[Submitted]) -> int:
    return sum(ledger.get_run(run.run_id).status in FINISHED for run in runs)


def health(port: int) -> tuple[int, dict[str, object]]:
    """Status and body of the worker's `GET /healthz` (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


class Outage:
    """One way to take the broker away and give it back."""

    def __init__(self, url: str, down: Callable[[], None], up: Callable[[], None]) -> None:
        self.url, self.down, self.up = url, down, up


@pytest.fixture(params=["redis", "rabbitmq"])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    if request.param == "redis":
        server = OwnRedis(tmp_path / "redis")
        try:
            server.start()
        except (FileNotFoundError, RuntimeError) as error:
            pytest.skip(f"cannot start a redis-server of the test's own: {error}")
        try:
            yield Outage(server.url, server.kill, server.start)
        finally:
            server.kill()
        return
    _check_rabbitmq()
    proxy = CuttableProxy(5672)
    proxy.restore()
    try:
        yield Outage(
            AMQP_URL.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}"), proxy.cut, proxy.restore
        )
    finally:
        proxy.cut()


@pytest.fixture
def outage_fleet(
    tmp_path: Path, outage: Outage, database_url: str, fake_model: Fake
) -> Iterator[Fleet]:
    broker = Broker("outage", outage.url, f"posthoc.outage.{tmp_path.name[-12:]}")
    fleet = Fleet(tmp_path, broker, database_url, fake_model)
    try:
        yield fleet
    finally:
        fleet.kill_all()
        if outage.url.startswith("amqp"):  # Redis: the test's own server goes with its data
            for queue in (broker.queue, f"{broker.queue}.takeover"):
                _delete_queue(Broker("rabbitmq", AMQP_URL, queue))


def send_tracked(fleet: Fleet, ledger: Ledger, runs: list[Submitted]) -> None:
    app = create_celery(Settings(broker_url=fleet.broker.url, queue=fleet.broker.queue))
    try:
        enqueue_with(app, ledger)([run.run_id for run in runs])
    finally:
        app.close()


def busy_worker(fleet: Fleet, ledger: Ledger, name: str, **settings: str) -> tuple[Worker, int]:
    port = free_port()
    worker = fleet.start(name, concurrency=3, health_port=str(port), **settings)
    wait_for(lambda: health(port)[0] == 200, timeout=60, what="the worker to consume", fleet=fleet)
    return worker, port


@pytest.mark.parametrize("outage", ["redis", "rabbitmq"], indirect=True)
def test_a_busy_worker_consumes_again_after_the_broker_comes_back(
    outage_fleet: Fleet, outage: Outage, ledger: Ledger
) -> None:
    fleet = outage_fleet
    worker, port = busy_worker(fleet, ledger, "busy", consumer_stall_seconds="3")
    runs = record_runs(ledger, RUNS)
    send_tracked(fleet, ledger, runs)
    wait_for(
        lambda: len(ledger.list_runs("running")) >= 3,
        timeout=60,
        what="every slot busy",
        fleet=fleet,
    )
    outage.down()
    down_at = time.monotonic()
    wait_for(
        lambda: health(port)[0] == 503, timeout=30, what="liveness to report the gap", fleet=fleet
    )
    gap_reported_after = time.monotonic() - down_at
    time.sleep(max(0.0, 15 - (time.monotonic() - down_at)))
    assert health(port)[0] == 503
    outage.up()
    wait_for(
        lambda: health(port)[0] == 200, timeout=90, what="the worker to consume again", fleet=fleet
    )
    wait_for(
        lambda: finished(ledger, runs) == RUNS,
        timeout=120,
        what="every run to finish after the outage",
        fleet=fleet,
    )
    assert worker.process.poll() is None, "the worker recovered in place, it did not exit"
    status, body = health(port)
    assert status == 200
    assert body["consuming"] is True
    assert int(str(body["consumer_restarts"])) >= 2  # the first start, then a reconnect
    assert gap_reported_after < 30
    for run in runs:
        assert ledger.get_run(run.run_id).status == "succeeded"
        assert outcomes(ledger.attempts(run.run_id))[-1] == "succeeded"
        assert [r.run_id for r in ledger.results([run.run_id])] == [run.run_id]
    # The worker really consumed after the outage: messages sent now are processed too.
    late = record_runs(ledger, 3)
    send_tracked(fleet, ledger, late)
    wait_for(
        lambda: finished(ledger, late) == len(late),
        timeout=60,
        what="runs sent after the outage to finish",
        fleet=fleet,
    )


@pytest.mark.parametrize("outage", ["rabbitmq"], indirect=True)
def test_a_worker_that_cannot_reconnect_exits_and_a_restarted_one_finishes(
    outage_fleet: Fleet, outage: Outage, ledger: Ledger
) -> None:
    fleet = outage_fleet
    first, _ = busy_worker(fleet, ledger, "gives-up", not_consuming_exit_seconds="6")
    runs = record_runs(ledger, 8)
    send_tracked(fleet, ledger, runs)
    wait_for(lambda: len(ledger.list_runs("running")) >= 2, timeout=60, what="busy", fleet=fleet)
    outage.down()
    wait_for(
        lambda: first.process.poll() is not None,
        timeout=60,
        what="the worker to give up",
        fleet=fleet,
    )
    assert first.process.returncode == EXIT_NOT_CONSUMING
    assert first.events("worker.not_consuming_exit")
    outage.up()
    busy_worker(fleet, ledger, "restarted")  # what the supervisor does
    wait_for(
        lambda: finished(ledger, runs) == len(runs),
        timeout=120,
        what="the restarted worker to finish every run",
        fleet=fleet,
    )
    for run in runs:
        assert ledger.get_run(run.run_id).status == "succeeded"
        assert [r.run_id for r in ledger.results([run.run_id])] == [run.run_id]
