"""Test-wide guards: no real network, no developer environment leaking into tests."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


class RealNetworkBlocked(RuntimeError):
    """A test tried to reach something that is not this machine."""


def _is_local(host: Any) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like never leave the machine
    if host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if not _is_local(host):
        raise RealNetworkBlocked(f"tests may only connect to loopback, not {address!r}")
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    host = address[0] if isinstance(address, tuple) else address
    if not _is_local(host):
        raise RealNetworkBlocked(f"tests may only connect to loopback, not {address!r}")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    # Resolving a public name is the first step of a real call: refuse it here, with a message
    # that says which test reached for the network.
    if isinstance(host, bytes):
        host = host.decode()
    if host is not None and not _is_local(host):
        raise RealNetworkBlocked(f"tests may not resolve {host!r}: no real network in tests")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def _no_real_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with connections to anything but loopback refused."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's shell (API keys, posthoc settings) never changes what a test does."""
    import os

    for name in list(os.environ):
        if name.startswith(("POSTHOC_", "ANTHROPIC_", "SLACK_")):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """Commands configure logging for the process; each test starts from structlog's defaults."""
    yield
    import structlog

    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture(autouse=True)
def _reset_process_limits() -> Iterator[None]:
    """Commands set the process's input limits from settings; each test starts from defaults."""
    yield
    from analyzers.definitions.limits import DEFAULT_LIMITS, use_limits

    use_limits(DEFAULT_LIMITS)
