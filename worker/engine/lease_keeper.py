"""Keeping the leases of one worker process's runs: one heartbeat for all of them.

Every `heartbeat_seconds` one ledger statement renews every lease the process holds
(`Ledger.renew_leases`), instead of one transaction per run: with hundreds of analyses in flight
that is hundreds of round trips saved per interval. A run whose lease the ledger no longer
grants (another worker took it over) is marked lost and its work cancelled; the engine then
writes nothing for it.

The keeper's task runs on the loop of the runs it keeps and ends when it keeps none, so an
engine used from several loops one after another (tests, `posthoc run`) starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import structlog

from worker.ledger import Ledger

log = structlog.get_logger("posthoc.worker")


@dataclass(eq=False)
class HeldLease:
    """One run's lease as this process holds it, and the work to stop if it is lost."""

    run_id: str
    worker_id: str
    attempt: int
    work: asyncio.Task[Any]
    lost: bool = field(default=False)


class LeaseKeeper:
    """Renews the leases of the runs registered with it, all in one statement per interval."""

    def __init__(self, ledger: Ledger, *, lease_seconds: float, heartbeat_seconds: float) -> None:
        self.ledger = ledger
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._held: dict[str, HeldLease] = {}
        self._task: asyncio.Task[None] | None = None

    def keep(self, run_id: str, worker_id: str, attempt: int, work: asyncio.Task[Any]) -> HeldLease:
        """Start renewing this run's lease (call from the loop that runs `work`)."""
        lease = HeldLease(run_id, worker_id, attempt, work)
        self._held[run_id] = lease
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._renew_forever())
        return lease

    def release(self, lease: HeldLease) -> None:
        """Stop renewing it (the run is finishing: its result or error is being written)."""
        if self._held.get(lease.run_id) is lease:
            del self._held[lease.run_id]

    @property
    def held(self) -> int:
        return len(self._held)

    async def renew_once(self) -> None:
        """One heartbeat: renew every held lease; cancel the work of those lost."""
        leases = list(self._held.values())
        if not leases:
            return
        renewed = await asyncio.to_thread(
            self.ledger.renew_leases,
            [(lease.run_id, lease.worker_id, lease.attempt) for lease in leases],
            self.lease_seconds,
        )
        for lease in leases:
            # A run released meanwhile finished (its completion released the lease itself).
            if lease.run_id in renewed or self._held.get(lease.run_id) is not lease:
                continue
            lease.lost = True
            self.release(lease)
            lease.work.cancel()

    async def _renew_forever(self) -> None:
        while self._held:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self.renew_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database may be back by the next beat; the leases are long enough for
                # a few missed ones (lease_seconds >> heartbeat_seconds).
                log.exception("lease.heartbeat_failed", held=len(self._held))

    async def aclose(self) -> None:
        """Stop the heartbeat task (the runs it kept are cancelled or done by now)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
