"""The per-model rate limit: local buckets, and buckets shared by a fleet through Redis."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from analyzers.model.protocol import ModelRequest
from analyzers.testing import ScriptedModel, reply, text
from worker.engine.ratelimit import LocalLimiter, RateLimitedModel, RedisLimiter


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def take(limiter: LocalLimiter | RedisLimiter, model: str, tokens: int) -> float:
    """One take, synchronously."""
    return asyncio.run(limiter.take(model, tokens))


def test_requests_per_minute_are_granted_then_refused_with_the_wait() -> None:
    """With 2 requests a minute, the third waits 30 s (one request refills every 30 s)."""
    clock = FakeClock()
    limiter = LocalLimiter(rpm=2, tpm=None, clock=clock)
    assert take(limiter, "m", 10) == 0
    assert take(limiter, "m", 10) == 0
    assert take(limiter, "m", 10) == pytest.approx(30.0)
    clock.now = 30.0
    assert take(limiter, "m", 10) == 0


def test_tokens_per_minute_limit_big_prompts() -> None:
    """A prompt larger than what is left waits for the refill it needs."""
    clock = FakeClock()
    limiter = LocalLimiter(rpm=None, tpm=6_000, clock=clock)
    assert take(limiter, "m", 5_000) == 0
    assert take(limiter, "m", 3_000) == pytest.approx(20.0)  # 2,000 missing at 100 tokens/s


def test_models_have_separate_buckets() -> None:
    """Limits are per model: one model's traffic does not slow another."""
    limiter = LocalLimiter(rpm=1, tpm=None, clock=FakeClock())
    assert take(limiter, "a", 1) == 0
    assert take(limiter, "b", 1) == 0
    assert take(limiter, "a", 1) > 0


def test_rate_limited_model_waits_before_calling() -> None:
    """The wrapper sleeps what the limiter says, then calls the model once."""
    clock = FakeClock()
    limiter = LocalLimiter(rpm=1, tpm=None, clock=clock)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    inner = ScriptedModel([reply(text("one")), reply(text("two"))])
    model = RateLimitedModel(inner, limiter, sleep=sleep)
    request = ModelRequest(model="m", max_tokens=100, system=[], messages=[])
    asyncio.run(model.complete(request))
    asyncio.run(model.complete(request))
    assert slept == [pytest.approx(60.0)]
    assert len(inner.requests) == 2


@pytest.mark.integration
def test_redis_buckets_are_shared_by_every_limiter() -> None:
    """Two limiters (two worker processes) on one Redis draw from the same bucket."""
    redis_asyncio = pytest.importorskip("redis.asyncio")

    async def scenario() -> list[float]:
        clients = [redis_asyncio.Redis.from_url("redis://127.0.0.1:6379/15") for _ in range(2)]
        try:
            await clients[0].ping()
        except OSError as exc:
            await asyncio.gather(*(client.aclose() for client in clients))
            if os.environ.get("CI") == "true":
                pytest.fail(f"Redis is not reachable in CI: {exc}")
            pytest.skip(f"Redis is not reachable: {exc}")
        prefix = f"test-{uuid.uuid4().hex}"
        first, second = (RedisLimiter(c, rpm=2, tpm=None, prefix=prefix) for c in clients)
        waits = [
            await first.take("m", 1),
            await second.take("m", 1),
            await first.take("m", 1),
        ]
        await asyncio.gather(*(client.aclose() for client in clients))
        return waits

    waits = asyncio.run(scenario())
    assert waits[:2] == [0.0, 0.0]
    assert 29.0 < waits[2] <= 30.0
