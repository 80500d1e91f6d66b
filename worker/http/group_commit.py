"""Group commit: many concurrent requests share one ledger transaction.

A request hands its work to `GroupCommit.submit` and awaits the answer. One writer thread takes
what has queued up (up to `max_batch` items, waiting at most `max_wait_seconds` for more once it
has one), writes the whole batch in one transaction, and only after the commit resolves each
request's future: nothing is acknowledged that is not durable. Should the batch fail, each of its
items is written again alone, in its own transaction, so one request's bad data fails that
request only.

After the commit (and before the answers) `after_commit` gets the batch's results, once: the
intake sends the batch's new runs to the broker there, in one round trip. A failure there is
logged and does not change the answers: the runs are durable and tracked, and the sweeper sends
what was not sent.

`hooks` let a test kill the process at the worst moments (`before_commit`, `after_commit`).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog
from sqlalchemy.engine import Connection

from worker.ledger import Ledger

log = structlog.get_logger("posthoc.http")

Item = TypeVar("Item")
Result = TypeVar("Result")

WriteBatch = Callable[[Connection, Sequence[Item]], Sequence[Result]]
"""Writes items in the given open transaction; one result per item, in order."""


@dataclass
class CommitHooks:
    """Called in the writer thread around each commit (a test kills the process in them)."""

    before_commit: Callable[[], None] = lambda: None
    after_commit: Callable[[], None] = lambda: None


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: Future[Result] = field(default_factory=Future)


_STOP = object()


class GroupCommit(Generic[Item, Result]):
    """A single writer that commits queued items in batches; see the module docstring.

    :param ledger: where the transactions go.
    :param write: writes a batch in an open transaction (it must not commit).
    :param after_commit: gets the committed results of each batch (sending to the broker).
    :param max_batch: the most items in one transaction.
    :param max_wait_seconds: how long a batch that has an item waits for more.
    """

    def __init__(
        self,
        ledger: Ledger,
        write: WriteBatch[Item, Result],
        *,
        after_commit: Callable[[Sequence[Result]], None] = lambda _: None,
        max_batch: int = 64,
        max_wait_seconds: float = 0.002,
        hooks: CommitHooks | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._ledger = ledger
        self._write = write
        self._after_commit = after_commit
        self._max_batch = max_batch
        self._max_wait = max_wait_seconds
        self._hooks = hooks or CommitHooks()
        self._queue: queue.SimpleQueue[_Pending[Item, Result] | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    async def submit(self, item: Item) -> Result:
        """Queue `item` and wait until its batch is committed; its result, or the exception
        writing it alone raised."""
        return await asyncio.wrap_future(self.submit_nowait(item))

    def submit_nowait(self, item: Item) -> Future[Result]:
        """Queue `item`; a future resolved once it is committed (or failed)."""
        pending: _Pending[Item, Result] = _Pending(item)
        with self._lock:
            if self._closed:
                raise RuntimeError("the group commit writer is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="posthoc-group-commit", daemon=True
                )
                self._thread.start()
            self._queue.put(pending)
        return pending.future

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
            self._queue.put(_STOP)
        if thread is not None:
            thread.join(timeout)

    # The writer thread

    def _run(self) -> None:
        while True:
            batch, stop = self._next_batch()
            # A request whose client went away (its future cancelled) is not written: it was
            # never acknowledged, and its redelivery records it. The rest can no longer be
            # cancelled, so their answers are always set.
            batch = [pending for pending in batch if pending.future.set_running_or_notify_cancel()]
            if batch:
                try:
                    self._commit(batch)
                except Exception as error:  # never let the writer die: answer with the error
                    log.exception("group_commit.writer_error", error=type(error).__name__)
                    for pending in batch:
                        if not pending.future.done():
                            pending.future.set_exception(error)
            if stop:
                return

    def _next_batch(self) -> tuple[list[_Pending[Item, Result]], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self._max_wait
        while len(batch) < self._max_batch:
            try:
                # Whatever is queued already joins at once; then wait out the window.
                remaining = deadline - time.monotonic()
                following = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if following is _STOP:
                return self._typed(batch), True
            batch.append(following)
        return self._typed(batch), False

    @staticmethod
    def _typed(batch: list[object]) -> list[_Pending[Item, Result]]:
        return [pending for pending in batch if isinstance(pending, _Pending)]

    def _commit(self, batch: list[_Pending[Item, Result]]) -> None:
        try:
            results = self._transaction([pending.item for pending in batch])
        except Exception as error:  # one item's data, or the database: find out item by item
            if len(batch) == 1:
                batch[0].future.set_exception(error)
                return
            log.warning("group_commit.batch_failed", items=len(batch), error=type(error).__name__)
            for pending in batch:
                self._commit([pending])
            return
        self._publish(results)
        for pending, result in zip(batch, results, strict=True):
            pending.future.set_result(result)

    def _transaction(self, items: list[Item]) -> Sequence[Result]:
        with self._ledger.transaction() as connection:
            results = self._write(connection, items)
            if len(results) != len(items):
                raise RuntimeError(f"wrote {len(items)} items but got {len(results)} results")
            self._hooks.before_commit()
        self._hooks.after_commit()
        return results

    def _publish(self, results: Sequence[Result]) -> None:
        try:
            self._after_commit(results)
        except Exception as error:  # durable and tracked in the ledger; the sweeper sends them
            log.warning("group_commit.after_commit_failed", error=type(error).__name__)
