"""A fleet-wide rate limit per model, so many workers do not stampede into 429s.

Two token buckets per model, requests per minute and input tokens per minute, refilled
continuously. On Redis the buckets are shared by every worker process (one atomic Lua script
takes from both or from neither); without Redis they are local to the process.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from analyzers.model.protocol import ModelClient, ModelRequest, ModelTurn
from analyzers.runtime.prompt import estimate_tokens

# KEYS[1]: the bucket hash. ARGV: now, rpm, tpm, tokens. Returns seconds to wait (0: granted).
_TAKE_SCRIPT = """
local now = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'requests', 'tokens', 'at')
local requests = tonumber(state[1]) or rpm
local tokens = tonumber(state[2]) or tpm
local at = tonumber(state[3]) or now
local elapsed = math.max(0, now - at)
requests = math.min(rpm, requests + elapsed * rpm / 60)
tokens = math.min(tpm, tokens + elapsed * tpm / 60)
want = math.min(want, tpm)
local wait = 0
if requests < 1 then wait = math.max(wait, (1 - requests) * 60 / rpm) end
if tokens < want then wait = math.max(wait, (want - tokens) * 60 / tpm) end
if wait == 0 then
  requests = requests - 1
  tokens = tokens - want
end
redis.call('HSET', KEYS[1], 'requests', requests, 'tokens', tokens, 'at', now)
redis.call('EXPIRE', KEYS[1], 120)
return tostring(wait)
"""

UNLIMITED = 10**12


class Limiter(Protocol):
    """Grants model calls. `take` returns how long to wait before asking again (0: granted)."""

    async def take(self, model: str, tokens: int) -> float:
        """Take one request and `tokens` input tokens from `model`'s buckets, or say how long
        to wait."""
        ...


@dataclass
class _Bucket:
    requests: float
    tokens: float
    at: float


class LocalLimiter:
    """The same buckets, in this process only (the embedded default)."""

    def __init__(
        self, rpm: int | None, tpm: int | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rpm = rpm or UNLIMITED
        self.tpm = tpm or UNLIMITED
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    async def take(self, model: str, tokens: int) -> float:
        """Take from the local buckets."""
        now = self.clock()
        bucket = self._buckets.setdefault(model, _Bucket(self.rpm, self.tpm, now))
        elapsed = max(0.0, now - bucket.at)
        bucket.requests = min(self.rpm, bucket.requests + elapsed * self.rpm / 60)
        bucket.tokens = min(self.tpm, bucket.tokens + elapsed * self.tpm / 60)
        bucket.at = now
        want = min(tokens, self.tpm)
        wait = 0.0
        if bucket.requests < 1:
            wait = max(wait, (1 - bucket.requests) * 60 / self.rpm)
        if bucket.tokens < want:
            wait = max(wait, (want - bucket.tokens) * 60 / self.tpm)
        if wait == 0:
            bucket.requests -= 1
            bucket.tokens -= want
        return wait


class RedisLimiter:
    """Buckets in Redis, shared by the whole fleet. `redis` is a `redis.asyncio.Redis`."""

    def __init__(
        self, redis: Any, rpm: int | None, tpm: int | None, prefix: str = "posthoc"
    ) -> None:
        self.redis = redis
        self.rpm = rpm or UNLIMITED
        self.tpm = tpm or UNLIMITED
        self.prefix = prefix
        self._script = redis.register_script(_TAKE_SCRIPT)

    async def take(self, model: str, tokens: int) -> float:
        """Take from the shared buckets, atomically."""
        key = f"{self.prefix}:ratelimit:{model}"
        wait = await self._script(keys=[key], args=[time.time(), self.rpm, self.tpm, tokens])
        return float(wait)


class RateLimitedModel:
    """A `ModelClient` that waits for the limiter before every call."""

    def __init__(
        self,
        inner: ModelClient,
        limiter: Limiter,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.inner = inner
        self.limiter = limiter
        self.sleep = sleep

    async def complete(self, request: ModelRequest) -> ModelTurn:
        """Wait for capacity, then call the model."""
        tokens = estimate_tokens(json.dumps([request.system, request.messages], default=str))
        while (wait := await self.limiter.take(request.model, tokens)) > 0:
            if request.deadline is not None and time.monotonic() + wait > request.deadline:
                wait = max(0.0, request.deadline - time.monotonic())
                await self.sleep(wait)
                break
            await self.sleep(wait)
        return await self.inner.complete(request)

    async def count_tokens(self, request: ModelRequest) -> int:
        """Counting is not rate limited the same way; pass it through."""
        return await self.inner.count_tokens(request)
