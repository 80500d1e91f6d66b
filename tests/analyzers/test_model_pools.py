"""The adapter's connection pools: a burst of streams leaves a bounded idle set behind."""

from __future__ import annotations

import asyncio

import anthropic

from analyzers.fakes import FakeMessagesAPI, FakeReply, Text, serve_fake_messages_api
from analyzers.model.anthropic import build_anthropic_model
from analyzers.model.protocol import ModelRequest

REQUEST = ModelRequest(
    model="claude-sonnet-4-6",
    max_tokens=256,
    system=[],
    messages=[{"role": "user", "content": "hi"}],
)
BURST = 24


def idle_connections(client: anthropic.AsyncAnthropic) -> int:
    pool = client._client._transport._pool  # type: ignore[attr-defined]
    return sum(connection.is_idle() for connection in pool.connections)


def burst(max_idle: int) -> tuple[list[int], int]:
    """Idle connections per pool after BURST concurrent calls over 2 pools, and the most
    streams the server saw at once."""
    api = FakeMessagesAPI()
    api.script([FakeReply([Text("ok")], latency=0.1) for _ in range(BURST)])

    async def main(base_url: str) -> list[int]:
        model = build_anthropic_model("test", base_url, pools=2, max_idle_connections=max_idle)
        try:
            turns = await asyncio.gather(*(model.complete(REQUEST) for _ in range(BURST)))
            assert [turn.text() for turn in turns] == ["ok"] * BURST
            return [idle_connections(client) for client in model._clients]
        finally:
            await model.aclose()

    with serve_fake_messages_api(api) as base_url:
        idle = asyncio.run(main(base_url))
    return idle, api.max_active_streams


def test_a_burst_leaves_at_most_the_bounded_idle_set() -> None:
    idle, peak = burst(max_idle=6)

    assert peak == BURST  # every call had its own connection during the burst
    assert idle == [3, 3]  # 6 idle over 2 pools; the rest were closed when released


def test_without_a_tight_bound_every_connection_stays_idle() -> None:
    idle, _ = burst(max_idle=200)

    assert idle == [BURST // 2, BURST // 2]
