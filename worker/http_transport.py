"""The edge that really sends HTTP tool requests: `HttpxTransport`, over `httpx2`.

It implements `analyzers.tools.base.HttpTransport`. The runtime has already decided the request may
be sent (allowed host, https); this module only sends it, and translates httpx2's exceptions into
the two the protocol promises: `TimeoutError` and `OSError`.

Redirects are not followed (a 3xx comes back as it is), so a request never ends up at a host the
tool did not allow. A name is resolved here and every address it resolves to is checked
(`analyzers.tools.http.address_refusal`: no loopback, private or link-local address behind a
public name unless the operator opened that network); the connection then goes to the checked
address, with the name kept for the Host header and TLS (SNI and certificate), so a second DNS
answer cannot lead it elsewhere. Cookies are never kept between requests: one client serves
every analyzer and tenant of the worker, and a cookie set by one tool's API must not ride along
on another's call. The environment's proxy and netrc settings are ignored unless asked for.
"""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Iterable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import Any

import httpx2

from analyzers.tools.base import HttpRequest, HttpResponse
from analyzers.tools.http import address_refusal

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Resolves (host, port) to IP address strings; raises `OSError` when it cannot."""
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_RESPONSE_BYTES = 2_000_000
"""A body is read up to this size; the tool shows the model far less anyway."""

USER_AGENT = "posthoc-http-tool"


class AddressRefused(OSError):
    """The host resolved to an address HTTP tools may not reach."""


async def resolve_with_system(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for `host`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class HttpxTransport:
    """Sends HTTP tool requests with one shared `httpx2.AsyncClient`.

    :param max_connections: connections open at once, over all hosts.
    :param max_keepalive_connections: idle connections kept for reuse.
    :param max_response_bytes: how much of a response body is read; the rest is dropped.
    :param trust_env: honour `HTTP(S)_PROXY`, `NO_PROXY`, `SSL_CERT_FILE` and `.netrc`.
    :param transport: an `httpx2` transport to send through instead of the network (tests).
    :param private_networks: non-public networks (e.g. `10.20.0.0/16`) a tool's host may
        resolve into; by default only public addresses, and loopback for `localhost`.
    :param resolve: the resolver (tests give one that knows names without DNS).
    """

    def __init__(
        self,
        *,
        max_connections: int = 20,
        max_keepalive_connections: int = 10,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        trust_env: bool = False,
        transport: httpx2.AsyncBaseTransport | None = None,
        private_networks: Iterable[str | Network] = (),
        resolve: Resolver = resolve_with_system,
    ) -> None:
        self._max_response_bytes = max_response_bytes
        self._private_networks = [ipaddress.ip_network(net) for net in private_networks]
        self._resolve = resolve
        self._client = httpx2.AsyncClient(
            follow_redirects=False,
            limits=httpx2.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_keepalive_connections,
            ),
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            headers={"user-agent": USER_AGENT},
            trust_env=trust_env,
            transport=transport,
        )

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send `request`; raise `TimeoutError` or `OSError` when it cannot be completed.

        `request.timeout_seconds` bounds the whole exchange, body included, not just each read.
        """
        timeout = request.timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange(request)
        except (TimeoutError, httpx2.TimeoutException):
            raise TimeoutError(f"no complete answer within {timeout:g} s") from None
        except (httpx2.RequestError, httpx2.InvalidURL) as exc:
            # `from None`: httpx2's exception holds the request, headers (and secrets) included.
            raise OSError(f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        """Close every pooled connection. The transport cannot be used afterwards."""
        await self._client.aclose()

    async def __aenter__(self) -> HttpxTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _exchange(self, request: HttpRequest) -> HttpResponse:
        url, headers, extensions = await self._pinned(request)
        async with self._client.stream(
            request.method,
            url,
            headers=headers,
            json=request.body,
            timeout=httpx2.Timeout(request.timeout_seconds),
            extensions=extensions,
        ) as response:
            raw, cut = await self._read_capped(response)
            return HttpResponse(status=response.status_code, body=_decode(response, raw, cut))

    async def _pinned(
        self, request: HttpRequest
    ) -> tuple[httpx2.URL, dict[str, str], dict[str, Any]]:
        """The URL to connect to (the checked address), its headers and extensions."""
        url = httpx2.URL(request.url)
        headers = dict(request.headers)
        host = url.host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return url, headers, {}  # an address literal, allowed as written
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await self._resolve(host, port)
        refusal = address_refusal(host, addresses, self._private_networks)
        if refusal is not None:
            raise AddressRefused(refusal)
        headers = {k: v for k, v in headers.items() if k.lower() != "host"}
        headers["Host"] = host if url.port is None else f"{host}:{url.port}"
        extensions: dict[str, Any] = {"sni_hostname": host} if url.scheme == "https" else {}
        return url.copy_with(host=addresses[0].split("%", 1)[0]), headers, extensions

    async def _read_capped(self, response: httpx2.Response) -> tuple[bytes, bool]:
        """The body up to `max_response_bytes`, and whether it was cut there."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > self._max_response_bytes:
                return b"".join(chunks)[: self._max_response_bytes], True
        return b"".join(chunks), False


def _decode(response: httpx2.Response, raw: bytes, cut: bool) -> Any:
    """JSON when the content type says so (and it parses), else text."""
    text = raw.decode(_charset(response), errors="replace")
    if cut:
        return text + f"…(response cut at {len(raw)} bytes)"
    if _is_json(response.headers.get("content-type", "")) and text.strip():
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _charset(response: httpx2.Response) -> str:
    charset = response.charset_encoding or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        return "utf-8"
    return charset
