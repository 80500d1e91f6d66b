"""`HttpxTransport` against a real local HTTP server: bodies, redirects, cookies, timeouts."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest

from analyzers.tools.base import HttpRequest, HttpResponse, HttpTransport
from worker.http_transport import USER_AGENT, HttpxTransport


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


ROUTES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/json": (200, {"content-type": "application/json"}, b'{"id": "V-1", "n": [1, 2]}'),
    "/problem": (404, {"content-type": "application/problem+json"}, b'{"title": "no vendor"}'),
    "/text": (200, {"content-type": "text/plain; charset=utf-8"}, "héllo".encode()),
    "/latin": (200, {"content-type": "text/plain; charset=iso-8859-1"}, "héllo".encode("latin-1")),
    "/odd-charset": (200, {"content-type": "text/plain; charset=klingon"}, b"plain"),
    "/bad-json": (200, {"content-type": "application/json"}, b"{not json"),
    "/empty-json": (200, {"content-type": "application/json"}, b""),
    "/redirect": (302, {"location": "http://localhost:1/elsewhere"}, b"moved"),
    "/set-cookie": (200, {"set-cookie": "session=abc; Path=/"}, b"ok"),
    "/big": (200, {"content-type": "application/json"}, b'["' + b"x" * 5000 + b'"]'),
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[Received] = []
        self.release = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {key.lower(): value for key, value in self.headers.items()}
        self.server.received.append(Received(self.command, self.path, headers, body))
        try:
            if self.path == "/slow":
                self.server.release.wait(10)
                self._reply(200, {}, b"late")
            elif self.path == "/trickle":
                # Every read comes quickly, but the whole body takes far longer than the timeout.
                self.send_response(200)
                self.send_header("content-length", "40")
                self.end_headers()
                for _ in range(40):
                    if self.server.release.wait(0.05):
                        return
                    self.wfile.write(b"x")
                    self.wfile.flush()
            elif self.path == "/echo":
                echo = {"headers": headers, "body": body.decode()}
                self._reply(200, {"content-type": "application/json"}, json.dumps(echo).encode())
            else:
                self._reply(*ROUTES[self.path])
        except OSError:
            pass  # the client gave up first

    def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    local = _Server()
    thread = threading.Thread(target=local.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield local
    local.release.set()
    local.shutdown()
    local.server_close()
    thread.join(5)


def url(server: _Server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def request(
    target: str,
    *,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> HttpRequest:
    return HttpRequest(method, target, headers or {}, body, timeout)


def send(*requests: HttpRequest, **options: Any) -> list[HttpResponse]:
    async def go() -> list[HttpResponse]:
        async with HttpxTransport(**options) as transport:
            return [await transport.send(one) for one in requests]

    return asyncio.run(go())


def test_it_is_an_http_transport() -> None:
    """HttpxTransport satisfies the runtime's HttpTransport protocol: mypy --strict (in CI)
    rejects the annotated assignment otherwise; at run time it builds and closes cleanly."""

    async def go() -> None:
        transport: HttpTransport = HttpxTransport()
        await transport.aclose()  # type: ignore[attr-defined]

    asyncio.run(go())


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/json", 200, {"id": "V-1", "n": [1, 2]}),
        ("/problem", 404, {"title": "no vendor"}),
        ("/text", 200, "héllo"),
        ("/latin", 200, "héllo"),
        ("/odd-charset", 200, "plain"),
        ("/bad-json", 200, "{not json"),
        ("/empty-json", 200, ""),
        ("/set-cookie", 200, "ok"),
    ],
)
def test_bodies_are_json_when_the_content_type_says_so_else_text(
    server: _Server, path: str, status: int, body: Any
) -> None:
    assert send(request(url(server, path))) == [HttpResponse(status, body)]


def test_json_request_bodies_and_headers(server: _Server) -> None:
    (response,) = send(
        request(
            url(server, "/echo"),
            method="POST",
            body={"name": "Zoë", "n": 1},
            headers={"Authorization": "Bearer t", "X-Trace": "1"},
        )
    )
    assert response.status == 200
    assert json.loads(response.body["body"]) == {"name": "Zoë", "n": 1}
    headers = response.body["headers"]
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == "Bearer t"
    assert headers["x-trace"] == "1"
    assert headers["user-agent"] == USER_AGENT


def test_no_body_is_sent_when_there_is_none(server: _Server) -> None:
    send(request(url(server, "/echo")))
    (received,) = server.received
    assert received.body == b""
    assert "content-type" not in received.headers


def test_redirects_are_not_followed(server: _Server) -> None:
    (response,) = send(request(url(server, "/redirect")))
    assert response == HttpResponse(302, "moved")
    assert [r.path for r in server.received] == ["/redirect"]


def test_cookies_are_not_carried_between_requests(server: _Server) -> None:
    send(request(url(server, "/set-cookie")), request(url(server, "/echo")))
    assert "cookie" not in server.received[1].headers


def test_large_bodies_are_cut_at_the_limit(server: _Server) -> None:
    (response,) = send(request(url(server, "/big")), max_response_bytes=100)
    assert isinstance(response.body, str)
    assert response.body == '["' + "x" * 98 + "…(response cut at 100 bytes)"


def test_a_slow_answer_raises_timeout_error(server: _Server) -> None:
    with pytest.raises(TimeoutError, match=r"no complete answer within 0\.2 s"):
        send(request(url(server, "/slow"), timeout=0.2))


def test_the_timeout_bounds_the_whole_exchange_not_each_read(server: _Server) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        send(request(url(server, "/trickle"), timeout=0.3))
    assert time.monotonic() - started < 1.5


def test_a_refused_connection_raises_os_error() -> None:
    free = _Server()
    port = free.server_address[1]
    free.server_close()
    with pytest.raises(OSError, match="ConnectError"):
        send(request(f"http://127.0.0.1:{port}/x"))


def test_an_unusable_url_raises_os_error() -> None:
    with pytest.raises(OSError, match="UnsupportedProtocol"):
        send(request("gopher://127.0.0.1/x"))


def test_errors_do_not_carry_the_request() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    with pytest.raises(OSError, match="ConnectError: refused") as caught:
        send(
            request("https://api.example.com/x", headers={"Authorization": "Bearer s3cret"}),
            transport=httpx2.MockTransport(refuse),
            resolve=FakeDns({"api.example.com": ["93.184.215.14"]}),
        )
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert "s3cret" not in str(caught.value)


# --- where a name leads: the resolved address is checked, and connected to ----------------------


class FakeDns:
    """A resolver that knows a few names: tests may not ask real DNS."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host not in self.answers:
            raise OSError(f"[Errno -2] Name or service not known: {host!r}")
        return self.answers[host]


@pytest.mark.parametrize(
    "addresses",
    [["127.0.0.1"], ["10.0.0.7"], ["169.254.169.254"], ["93.184.215.14", "192.168.1.2"], ["::1"]],
    ids=["loopback", "private", "metadata", "mixed", "ipv6-loopback"],
)
def test_a_public_name_resolving_to_a_non_public_address_is_refused(addresses: list[str]) -> None:
    def never(request: httpx2.Request) -> httpx2.Response:
        raise AssertionError("no request may be sent")

    dns = FakeDns({"crm.acme.example": addresses})
    with pytest.raises(OSError, match="non-public address") as caught:
        send(
            request("https://crm.acme.example/x"),
            transport=httpx2.MockTransport(never),
            resolve=dns,
        )
    assert "crm.acme.example" in str(caught.value)
    assert dns.asked == [("crm.acme.example", 443)]


def test_localhost_must_resolve_to_this_machine() -> None:
    def never(request: httpx2.Request) -> httpx2.Response:
        raise AssertionError("no request may be sent")

    dns = FakeDns({"localhost": ["10.1.2.3"]})
    with pytest.raises(OSError, match="not this machine"):
        send(request("http://localhost:8080/x"), transport=httpx2.MockTransport(never), resolve=dns)


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(server: _Server) -> None:
    """A name resolved once, checked, and connected to by address: the server sees the name in
    the Host header. Loopback is allowed here only because the operator opened it."""
    port = server.server_address[1]
    dns = FakeDns({"tickets.internal.example": ["127.0.0.1"]})
    [response] = send(
        request(f"http://tickets.internal.example:{port}/json"),
        resolve=dns,
        private_networks=["127.0.0.0/8"],
    )
    assert response.status == 200
    assert dns.asked == [("tickets.internal.example", port)]
    [received] = server.received
    assert received.headers["host"] == f"tickets.internal.example:{port}"


def test_an_unknown_name_is_an_os_error() -> None:
    with pytest.raises(OSError, match="not known"):
        send(request("https://nowhere.example/x"), resolve=FakeDns({}))
