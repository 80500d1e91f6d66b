"""Many workers, one run: exactly one claim wins, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.worker.ledger.conftest import QueueRun, make_result
from worker.ledger import ClaimedRun, Ledger, ManualClock

WORKERS = 8


def _race(ledger: Ledger, run_id: str) -> list[ClaimedRun | None]:
    start = threading.Barrier(WORKERS)

    def claim(worker: int) -> ClaimedRun | None:
        start.wait()
        return ledger.claim(run_id, f"worker-{worker}", 60)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(claim, range(WORKERS)))


def test_eight_workers_claim_one_run_and_exactly_one_wins(
    ledger: Ledger, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    claims = _race(ledger, run_id)
    winners = [claim for claim in claims if claim is not None]
    assert len(winners) == 1
    assert ledger.get_run(run_id).lease_owner == winners[0].worker_id
    assert [attempt.worker_id for attempt in ledger.attempts(run_id)] == [winners[0].worker_id]


def test_eight_workers_take_over_an_expired_lease_and_exactly_one_wins(
    ledger: Ledger, clock: ManualClock, queue_run: QueueRun
) -> None:
    run_id = queue_run()
    ledger.claim(run_id, "the-dead-one", 60)
    clock.advance(61)
    winners = [claim for claim in _race(ledger, run_id) if claim is not None]
    assert len(winners) == 1
    assert winners[0].attempt == 2
    assert [attempt.outcome for attempt in ledger.attempts(run_id)] == ["expired", None]


def test_many_workers_on_many_runs_do_each_run_once(ledger: Ledger, queue_run: QueueRun) -> None:
    run_ids = [queue_run() for _ in range(20)]
    done: Counter[str] = Counter()
    lock = threading.Lock()

    def work(worker: int) -> None:
        for run_id in run_ids:  # every worker receives every message
            claimed = ledger.claim(run_id, f"worker-{worker}", 60)
            if claimed is None:
                continue
            assert ledger.heartbeat(run_id, claimed.worker_id, 60)
            assert ledger.complete(run_id, claimed.worker_id, make_result(claimed))
            with lock:
                done[run_id] += 1

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(work, range(WORKERS)))
    assert done == dict.fromkeys(run_ids, 1)
    assert ledger.counts_by_status()["succeeded"] == 20
