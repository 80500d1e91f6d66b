"""The test-wide network guard itself."""

from __future__ import annotations

import asyncio
import socket

import pytest

from analyzers.errors import TransientModelError
from analyzers.model.anthropic import HTTP_CLIENT_KINDS, HttpClientKind, build_anthropic_model
from analyzers.model.protocol import ModelRequest
from tests.conftest import RealNetworkBlocked


def test_connecting_to_a_public_address_is_refused() -> None:
    """A test that reaches for the internet fails loudly instead of leaking a request."""
    with socket.socket() as sock, pytest.raises(RealNetworkBlocked):
        sock.connect(("93.184.215.14", 443))


def test_resolving_a_public_name_is_refused() -> None:
    """Name resolution of a public host is refused before any packet is sent."""
    with pytest.raises(RealNetworkBlocked):
        socket.getaddrinfo("api.anthropic.com", 443)


def test_loopback_is_allowed() -> None:
    """Local fakes and the CI services stay reachable."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.socket() as client:
            client.connect(server.getsockname())


@pytest.mark.parametrize("http_client", HTTP_CLIENT_KINDS)
def test_the_model_adapter_cannot_reach_the_real_api(http_client: HttpClientKind) -> None:
    """The adapter as the worker builds it, with no base URL (so api.anthropic.com), on each of
    its transports: the guard stops it before any packet leaves."""
    model = build_anthropic_model("not-a-key", http_client=http_client, max_call_attempts=1)
    request = ModelRequest(
        model="claude-sonnet-4-6",
        max_tokens=16,
        system=[],
        messages=[{"role": "user", "content": "hi"}],
    )

    async def call() -> None:
        try:
            await model.complete(request)
        finally:
            await model.aclose()

    with pytest.raises(TransientModelError) as raised:
        asyncio.run(call())
    chain: list[BaseException] = []
    error: BaseException | None = raised.value
    while error is not None and len(chain) < 20:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(link, RealNetworkBlocked) for link in chain), chain
