"""Model turns through the Message Batches API: half the price, for work that can wait.

`BatchingModel` is a `ModelClient` whose `complete` does not call the model itself: the turns
asked for within `gather_seconds` of each other (the concurrent runs of a rerun job) go out as
one batch, which is polled until it ends; each caller then gets its own result, as a turn or as
the error the API gave for that request. A run with several turns therefore takes several batch
rounds. The SDK calls live in the adapter (`AnthropicBatches` in `analyzers.model.anthropic`)
behind the small `BatchTransport` protocol, so this module stays SDK-free.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from analyzers.errors import ModelError, TransientModelError
from analyzers.model.protocol import ModelClient, ModelRequest, ModelTurn


class BatchTransport(Protocol):
    """What batching needs from the API."""

    async def submit(self, requests: Sequence[tuple[str, ModelRequest]]) -> str:
        """Create a batch of (custom id, request); return its id."""
        ...

    async def ended(self, batch_id: str) -> bool:
        """Whether the batch has finished processing."""
        ...

    async def results(self, batch_id: str) -> dict[str, ModelTurn | ModelError]:
        """Each request's turn, or the error the API answered it with, by custom id."""
        ...

    async def aclose(self) -> None: ...


Pending = tuple[str, ModelRequest, "asyncio.Future[ModelTurn]"]


class BatchingModel:
    """A `ModelClient` sending every turn through a Message Batch (see the module docstring).

    `count_with` answers `count_tokens` (not a batch operation).
    """

    def __init__(
        self,
        transport: BatchTransport,
        *,
        count_with: ModelClient,
        gather_seconds: float = 0.2,
        poll_seconds: float = 5.0,
        max_requests: int = 10_000,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._transport = transport
        self._count_with = count_with
        self._gather = gather_seconds
        self._poll = poll_seconds
        self._max = max_requests
        self._sleep = sleep
        self._pending: list[Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._rounds: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self.batches_sent = 0

    async def complete(self, request: ModelRequest) -> ModelTurn:
        future: asyncio.Future[ModelTurn] = asyncio.get_running_loop().create_future()
        self._pending.append((f"turn-{next(self._ids)}", request, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_after_gathering())
        return await future

    async def count_tokens(self, request: ModelRequest) -> int:
        return await self._count_with.count_tokens(request)

    async def aclose(self) -> None:
        for task in [*self._rounds, *([self._flusher] if self._flusher else [])]:
            task.cancel()
        await self._transport.aclose()
        aclose = getattr(self._count_with, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _flush_after_gathering(self) -> None:
        await self._sleep(self._gather)
        taken, self._pending = self._pending, []
        self._flusher = None  # turns asked for from now on gather for the next batch
        for start in range(0, len(taken), self._max):
            task = asyncio.create_task(self._round(taken[start : start + self._max]))
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)

    async def _round(self, items: list[Pending]) -> None:
        try:
            batch_id = await self._transport.submit([(cid, request) for cid, request, _ in items])
            self.batches_sent += 1
            while not await self._transport.ended(batch_id):
                await self._sleep(self._poll)
            answers = await self._transport.results(batch_id)
        except ModelError as error:
            for _, _, future in items:
                if not future.done():
                    future.set_exception(error)
            return
        for custom_id, _, future in items:
            if future.done():
                continue
            answer = answers.get(custom_id)
            if answer is None:
                future.set_exception(
                    TransientModelError(f"message batch {batch_id} returned no result for a turn")
                )
            elif isinstance(answer, ModelError):
                future.set_exception(answer)
            else:
                future.set_result(answer)
