"""The test-wide network guard itself."""

from __future__ import annotations

import socket

import pytest

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
