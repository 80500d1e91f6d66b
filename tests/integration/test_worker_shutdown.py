"""A worker told to stop (SIGTERM, as Kubernetes and systemd do) with analyses in flight stops
claiming, lets them finish for `POSTHOC_SHUTDOWN_DRAIN_SECONDS`, hands back the ones still
running, and exits within the grace period the deployment files give it: no run is left leased.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery

from tests.integration.conftest import (
    REDIS_URL,
    Broker,
    Fake,
    Fleet,
    Submitted,
    _check_redis,
    _delete_queue,
    record_runs,
    send,
    wait_for,
)
from worker.ledger import Ledger

pytestmark = pytest.mark.integration

GRACE_SECONDS = 30.0
"""Well under the deployment's grace period; what this test allows the worker to exit in."""


@pytest.fixture
def broker() -> Iterator[Broker]:
    """Redis only: what is tested is the worker's shutdown, the same on either broker."""
    _check_redis()
    found = Broker("redis", REDIS_URL, f"posthoc.test.{uuid.uuid4().hex[:10]}")
    try:
        yield found
    finally:
        _delete_queue(found)


def _stop(fleet: Fleet, ledger: Ledger, sender: Celery, fake: Fake, drain: str) -> list[str]:
    """Three runs in flight on one worker, SIGTERM; the statuses after it exited."""
    fake.analyst.latency = 1.5
    worker = fleet.start("A", concurrency=3, shutdown_drain_seconds=drain)
    runs: list[Submitted] = record_runs(ledger, 3)
    send(sender, [run.run_id for run in runs])
    wait_for(
        lambda: all(fake.analyst.turns_seen(run.conversation_id)[0] >= 1 for run in runs),
        timeout=60,
        what="three analyses talking to the model",
        fleet=fleet,
    )
    sent_at = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    try:
        worker.process.wait(timeout=GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not exit within {GRACE_SECONDS:.0f} s\n{fleet.logs()}")
    assert time.monotonic() - sent_at < GRACE_SECONDS
    assert worker.process.returncode == 0, fleet.logs()
    after = [ledger.get_run(run.run_id) for run in runs]
    assert [run.lease_owner for run in after] == [None, None, None], fleet.logs()
    return [run.status for run in after]


def test_sigterm_lets_runs_in_flight_finish_within_the_drain(
    fleet: Fleet, ledger: Ledger, sender: Celery, fake_model: Fake
) -> None:
    """A drain longer than the analyses: every run finishes, then the worker exits."""
    assert _stop(fleet, ledger, sender, fake_model, drain="30") == ["succeeded"] * 3


def test_sigterm_hands_back_runs_that_outlast_the_drain(
    fleet: Fleet, ledger: Ledger, sender: Celery, fake_model: Fake
) -> None:
    """A drain shorter than the analyses: every run is handed back (queued, not leased, its
    attempt not spent), woken on the takeover queue, and another worker finishes it."""
    statuses = _stop(fleet, ledger, sender, fake_model, drain="0.5")
    assert statuses == ["queued"] * 3, fleet.logs()
    run_ids = [run.id for run in ledger.list_runs("queued")]
    for run_id in run_ids:
        [attempt] = ledger.attempts(run_id)
        assert (attempt.outcome, attempt.error_type) == ("retry", "worker_shutdown")
    fleet.start("B", concurrency=3)
    wait_for(
        lambda: all(ledger.get_run(run_id).status == "succeeded" for run_id in run_ids),
        timeout=60,
        what="worker B to finish the handed-back runs",
        fleet=fleet,
    )
