"""A `ModelClient` that times every model call for `posthoc_model_request_duration_seconds`
(and, with tracing on, opens a span per model turn inside the run's span).

It wraps the adapter (and the rate limiter, when there is one) so the histogram shows the time
a run waited on the model, retries and rate-limit waits included. Failed calls are timed too:
a slow failure is latency all the same.
"""

from __future__ import annotations

import time
from typing import Any

from analyzers.model.protocol import ModelClient, ModelRequest, ModelTurn
from worker.observability import metrics, tracing


class MeteredModel:
    """Times `complete` per model id; passes everything else through."""

    def __init__(self, inner: ModelClient) -> None:
        self.inner = inner

    async def complete(self, request: ModelRequest) -> ModelTurn:
        started = time.monotonic()
        with tracing.span("posthoc.model_turn", model=request.model) as span:
            try:
                turn = await self.inner.complete(request)
            finally:
                metrics.MODEL_LATENCY.labels(request.model).observe(time.monotonic() - started)
            tracing.set_attributes(
                span,
                stop_reason=turn.stop_reason,
                input_tokens=turn.usage.input_tokens,
                output_tokens=turn.usage.output_tokens,
                cache_read_tokens=turn.usage.cache_read_input_tokens,
            )
            return turn

    async def count_tokens(self, request: ModelRequest) -> int:
        return await self.inner.count_tokens(request)

    async def aclose(self) -> None:
        """Close the wrapped model's connections, if it has any."""
        inner: Any = self.inner
        while inner is not None:
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()
                return
            inner = getattr(inner, "inner", None)
