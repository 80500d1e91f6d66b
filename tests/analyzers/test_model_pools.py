"""The adapter's connection pools. On httpx a burst of streams leaves a bounded idle set behind
(its pool scans every connection per request); on aiohttp (the default) one pool keeps the
burst's connections idle and the next burst reuses them instead of opening new ones."""

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


def idle_aiohttp_connections(client: anthropic.AsyncAnthropic) -> set[int]:
    """The identities of the idle connections in the client's aiohttp connector."""
    connector = client._client._transport.client.connector  # type: ignore[attr-defined]
    return {id(protocol) for idle in connector._conns.values() for protocol, _ in idle}


def burst(max_idle: int) -> tuple[list[int], int]:
    """Idle connections per pool after BURST concurrent calls over 2 pools, and the most
    streams the server saw at once."""
    api = FakeMessagesAPI()
    api.script([FakeReply([Text("ok")], latency=0.1) for _ in range(BURST)])

    async def main(base_url: str) -> list[int]:
        model = build_anthropic_model(
            "test", base_url, http_client="httpx", pools=2, max_idle_connections=max_idle
        )
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


def test_on_aiohttp_one_pool_keeps_a_burst_idle_and_the_next_burst_reuses_it() -> None:
    api = FakeMessagesAPI()
    api.script([FakeReply([Text("ok")], latency=0.1) for _ in range(2 * BURST)])

    async def main(base_url: str) -> tuple[int, set[int], set[int]]:
        model = build_anthropic_model("test", base_url)  # aiohttp, one pool: the defaults
        try:
            (client,) = model._clients
            await asyncio.gather(*(model.complete(REQUEST) for _ in range(BURST)))
            after_first = idle_aiohttp_connections(client)
            turns = await asyncio.gather(*(model.complete(REQUEST) for _ in range(BURST)))
            assert [turn.text() for turn in turns] == ["ok"] * BURST
            return len(model._clients), after_first, idle_aiohttp_connections(client)
        finally:
            await model.aclose()

    with serve_fake_messages_api(api) as base_url:
        pools, after_first, after_second = asyncio.run(main(base_url))

    assert pools == 1
    assert api.max_active_streams == BURST
    assert len(after_first) == BURST  # every connection of the burst kept for reuse
    assert after_second == after_first  # the second burst opened none
