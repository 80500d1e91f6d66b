"""Loopback only: imported at start-up by every Python process whose PYTHONPATH holds this
folder (Python imports `sitecustomize` from `sys.path` while it starts).

The integration tests start `posthoc worker` processes with it, so that a worker can reach the
local services (PostgreSQL, Redis, RabbitMQ, the fake Messages API, all on 127.0.0.1) and
nothing else: any connection to, or name lookup of, a host that is not loopback raises
`PermissionError` before a packet leaves. It guards what goes through Python's `socket` module
(redis-py, py-amqp, httpx/anyio, asyncio); libpq, which psycopg drives from C, connects only
where `POSTHOC_DATABASE_URL` says, and the tests point that at 127.0.0.1.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _is_loopback(host: Any) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like never leave the machine
    if host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _refuse(what: str) -> PermissionError:
    return PermissionError(errno.EACCES, f"loopback only (tests/integration): refused {what}")


def _connect(self: socket.socket, address: Any) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if not _is_loopback(host):
        raise _refuse(f"a connection to {address!r}")
    _real_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    host = address[0] if isinstance(address, tuple) else address
    if not _is_loopback(host):
        raise _refuse(f"a connection to {address!r}")
    return _real_connect_ex(self, address)


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and not _is_loopback(name):
        raise _refuse(f"a lookup of {name!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _connect  # type: ignore[method-assign,assignment]
socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign,assignment]
socket.getaddrinfo = _getaddrinfo
