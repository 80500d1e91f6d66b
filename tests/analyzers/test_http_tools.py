"""HTTP tools end to end: `HttpToolRunner` through the real `HttpxTransport` to a local server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from analyzers.errors import ConfigError
from analyzers.tools.base import HttpRequest, HttpResponse, HttpTransport, ReadCoverage, ToolContext
from analyzers.tools.base import ToolOutcome as Outcome
from analyzers.tools.http import (
    MAX_RESPONSE_CHARS,
    REDACTED,
    HttpToolCrashed,
    HttpToolRunner,
    url_refusal,
)
from schemas.analyzer import HttpTool
from schemas.conversation import Conversation
from worker.http_transport import HttpxTransport

SECRET = "tok-s3cr3t-value"

CONVERSATION = Conversation(
    conversation_id="c-1",
    tenant_id="acme",
    agent_id="bot",
    channel="chat",
    started_at=datetime(2026, 11, 20, 10, tzinfo=UTC),
    ended_at=datetime(2026, 11, 20, 11, tzinfo=UTC),
)


# --- a real local server -----------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


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
        received = Received(self.command, self.path, headers, body)
        self.server.received.append(received)
        route = self.path.split("?", 1)[0]
        try:
            if route == "/slow":
                self.server.release.wait(10)
                self._reply(200, "text/plain", b"late")
            elif route == "/fail":
                auth = self.headers.get("authorization", "")
                self._reply(500, "text/plain", f"database down; you sent {auth!r}".encode())
            elif route == "/big":
                self._reply(200, "application/json", json.dumps({"x": "y" * 50_000}).encode())
            elif route == "/empty":
                self._reply(204, "text/plain", b"")
            else:
                echo = {
                    "method": self.command,
                    "path": self.path,
                    "authorization": self.headers.get("authorization"),
                    "json": json.loads(body) if body else None,
                }
                self._reply(200, "application/json", json.dumps(echo).encode())
        except OSError:
            pass  # the client gave up (the timeout test): nothing to answer

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
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


def base(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def tool(**fields: Any) -> HttpToolRunner:
    spec: dict[str, Any] = {
        "name": "vendor_lookup",
        "description": "Look a vendor up.",
        # The local server's port is chosen at random: allow any port of this address.
        "allowed_hosts": ["127.0.0.1:*"],
        "input_schema": {
            "type": "object",
            "properties": {"vendor_id": {"type": "string"}},
            "required": ["vendor_id"],
        },
    }
    return HttpToolRunner(HttpTool.model_validate({**spec, **fields}))


def call(
    runner: HttpToolRunner,
    arguments: dict[str, Any],
    *,
    secrets: Mapping[str, str] | None = None,
    http: HttpTransport | bool | None = True,
) -> Outcome:
    async def go() -> Outcome:
        async with HttpxTransport() as transport:
            chosen = transport if http is True else http or None
            context = ToolContext(
                conversation=CONVERSATION,
                coverage=ReadCoverage(total_turns=0),
                http=chosen,
                secrets=secrets or {},
            )
            return await runner.call(arguments, context)

    return asyncio.run(go())


# --- requests that go through ------------------------------------------------------------------


def test_get_with_url_encoded_path_and_query_values(server: _Server) -> None:
    runner = tool(
        url=base(server) + "/vendors/{{vendor_id}}?q={{vendor_id}}",
    )
    outcome = call(runner, {"vendor_id": "a b/../c?d=1&e#f@evil.example"})
    assert not outcome.is_error, outcome.output
    escaped = "a%20b%2F..%2Fc%3Fd%3D1%26e%23f%40evil.example"
    assert outcome.output["path"] == f"/vendors/{escaped}?q={escaped}"
    assert [(r.method, r.path) for r in server.received] == [
        ("GET", f"/vendors/{escaped}?q={escaped}")
    ]


def test_post_fills_the_json_body_keeping_types(server: _Server) -> None:
    runner = tool(
        method="POST",
        url=base(server) + "/vendors",
        body={
            "vendor": {"name": "{{name}}", "size": "{{size}}", "label": "{{name}} ({{size}})"},
            "tags": "{{tags}}",
            "fixed": True,
        },
        input_schema={
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "size": {"type": "integer"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["name", "size", "tags"],
        },
    )
    outcome = call(runner, {"name": "TechCorp", "size": 12, "tags": ["new", "eu"]})
    assert not outcome.is_error, outcome.output
    sent = {
        "vendor": {"name": "TechCorp", "size": 12, "label": "TechCorp (12)"},
        "tags": ["new", "eu"],
        "fixed": True,
    }
    assert outcome.output["json"] == sent
    (received,) = server.received
    assert received.method == "POST"
    assert received.headers["content-type"] == "application/json"
    assert json.loads(received.body) == sent


def test_secrets_reach_the_server_but_never_the_outcome(server: _Server) -> None:
    runner = tool(
        url=base(server) + "/vendors/{{vendor_id}}",
        headers={"Authorization": "Bearer {{secrets.API_TOKEN}}", "X-Plain": "visible"},
    )
    outcome = call(runner, {"vendor_id": "V-1"}, secrets={"API_TOKEN": SECRET, "OTHER": "x"})
    assert not outcome.is_error, outcome.output
    (received,) = server.received
    assert received.headers["authorization"] == f"Bearer {SECRET}"
    assert received.headers["x-plain"] == "visible"
    # The server echoed the header back: the model sees it redacted.
    assert outcome.output["authorization"] == REDACTED
    assert SECRET not in json.dumps(outcome.output)


def test_secrets_in_the_url_are_redacted_from_errors(server: _Server) -> None:
    runner = tool(
        url=base(server) + "/fail?key={{secrets.API_TOKEN}}",
        headers={"Authorization": "Token {{secrets.API_TOKEN}}"},
        input_schema={"type": "object", "properties": {}},
    )
    outcome = call(runner, {}, secrets={"API_TOKEN": SECRET})
    assert outcome.is_error
    assert server.received[0].path == f"/fail?key={SECRET}"
    assert SECRET not in outcome.output
    assert f"/fail?key={REDACTED}" in outcome.output
    assert "you sent '[redacted]'" in outcome.output


def test_large_bodies_are_cut_before_the_model_sees_them(server: _Server) -> None:
    outcome = call(tool(url=base(server) + "/big", input_schema={"type": "object"}), {})
    assert not outcome.is_error
    assert isinstance(outcome.output, str)
    assert outcome.output.startswith('{"x":"yyy')
    assert len(outcome.output) < MAX_RESPONSE_CHARS + 200
    assert outcome.output.endswith(f"only the first {MAX_RESPONSE_CHARS} are shown)")


def test_an_empty_success_is_null_unless_the_tool_says_otherwise(server: _Server) -> None:
    """Changed on purpose with issue 7: an empty body is the result null (found nothing), which
    a procedure condition can test; `not_found_is_null: false` keeps the old wording."""
    url = base(server) + "/empty"
    outcome = call(tool(url=url, input_schema={"type": "object"}), {})
    assert outcome == Outcome(None)
    strict = tool(url=url, input_schema={"type": "object"}, not_found_is_null=False)
    assert call(strict, {}) == Outcome("HTTP 204 with an empty body")


# --- refused before any request ----------------------------------------------------------------


def test_a_host_not_allowed_is_refused_before_any_request(server: _Server) -> None:
    port = server.server_address[1]
    runner = tool(url=f"http://localhost:{port}/vendors/{{{{vendor_id}}}}")
    outcome = call(runner, {"vendor_id": "V-1"})
    assert outcome.is_error
    assert "host 'localhost'" in outcome.output
    assert "not in this tool's allowed_hosts ['127.0.0.1:*']" in outcome.output
    assert server.received == []


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://127.0.0.1/file", "scheme 'ftp'"),
        ("http://api.example.com/v", "scheme 'http' of 'http://api.example.com/v' is not allowed"),
        ("https://user:pw@api.example.com/v", "carries credentials"),
        ("https://api.example.com:port/v", "is not a valid URL"),
    ],
)
def test_disallowed_schemes_and_addresses_are_refused(url: str, fragment: str) -> None:
    runner = tool(url=url, allowed_hosts=["api.example.com", "127.0.0.1"])
    outcome = call(runner, {"vendor_id": "V-1"})
    assert outcome.is_error
    assert fragment in outcome.output


def test_url_refusal_rules() -> None:
    assert url_refusal("https://API.example.com/x", ["api.example.com"]) is None
    assert url_refusal("http://127.0.0.1:80/x", ["127.0.0.1"]) is None
    assert url_refusal("http://[::1]/x", ["::1"]) is None
    assert url_refusal("http://localhost/x", ["localhost"]) is None
    assert url_refusal("https://evil.example/x", ["api.example.com"]) is not None
    assert url_refusal("https:///x", ["api.example.com"]) is not None


def test_header_values_may_not_break_lines(server: _Server) -> None:
    runner = tool(url=base(server) + "/v", headers={"X-Vendor": "{{vendor_id}}"})
    outcome = call(runner, {"vendor_id": "V-1\r\nX-Admin: yes"})
    assert outcome.is_error
    assert "header 'X-Vendor' would contain a line break" in outcome.output
    assert server.received == []


def test_invalid_arguments_list_every_problem(server: _Server) -> None:
    runner = tool(
        url=base(server) + "/v/{{vendor_id}}",
        input_schema={
            "type": "object",
            "properties": {
                "vendor_id": {"type": "string", "pattern": "^V-[0-9]+$"},
                "limit": {"type": "integer", "maximum": 10},
            },
            "required": ["vendor_id"],
            "additionalProperties": False,
        },
    )
    outcome = call(runner, {"vendor_id": "X", "limit": 50, "other": 1})
    assert outcome.is_error
    lines = outcome.output.splitlines()
    assert lines[0] == "invalid input for vendor_lookup:"
    assert "- $.limit: 50 is greater than the maximum of 10" in lines
    assert "- $.vendor_id: 'X' does not match '^V-[0-9]+$'" in lines
    assert any(line.startswith("- $: Additional properties") for line in lines)
    assert server.received == []


def test_a_missing_secret_is_named_but_nothing_is_sent(server: _Server) -> None:
    runner = tool(
        url=base(server) + "/v/{{vendor_id}}",
        headers={"Authorization": "Bearer {{secrets.API_TOKEN}}", "X-Key": "{{secrets.OTHER}}"},
    )
    outcome = call(runner, {"vendor_id": "V-1"}, secrets={"OTHER": SECRET})
    assert outcome.is_error
    assert "no secret named 'API_TOKEN'" in outcome.output
    assert SECRET not in outcome.output
    assert server.received == []


def test_a_placeholder_without_a_value_is_an_error(server: _Server) -> None:
    runner = tool(
        url=base(server) + "/v/{{vendor_id}}?page={{page}}",
        input_schema={
            "type": "object",
            "properties": {"vendor_id": {"type": "string"}, "page": {"type": "integer"}},
        },
    )
    outcome = call(runner, {"vendor_id": "V-1"})
    assert outcome.is_error
    assert "placeholder {{page}} has no value" in outcome.output
    assert server.received == []


def test_without_a_transport_the_tool_says_it_is_not_configured(server: _Server) -> None:
    outcome = call(tool(url=base(server) + "/v"), {"vendor_id": "V-1"}, http=None)
    assert outcome == Outcome("HTTP tools are not configured in this worker", is_error=True)


# --- failures ----------------------------------------------------------------------------------


def test_a_server_error_is_reported_with_its_status_and_an_excerpt(server: _Server) -> None:
    outcome = call(tool(url=base(server) + "/fail"), {"vendor_id": "V-1"})
    assert outcome.is_error
    assert outcome.output.startswith(f"GET {base(server)}/fail answered HTTP 500: database down")


def test_a_timeout_is_an_error_outcome(server: _Server) -> None:
    runner = tool(url=base(server) + "/slow", timeout_seconds=0.3)
    outcome = call(runner, {"vendor_id": "V-1"})
    assert outcome == Outcome(f"GET {base(server)}/slow timed out after 0.3 s", is_error=True)
    assert len(server.received) == 1


def test_a_refused_connection_is_an_error_outcome() -> None:
    free = _Server()
    port = free.server_address[1]
    free.server_close()  # nothing listens on the port any more
    outcome = call(tool(url=f"http://127.0.0.1:{port}/v"), {"vendor_id": "V-1"})
    assert outcome.is_error
    assert outcome.output.startswith(f"GET http://127.0.0.1:{port}/v failed: ")


class _BrokenTransport:
    async def send(self, request: HttpRequest) -> HttpResponse:
        raise RuntimeError(f"bug while sending {request.url} with {dict(request.headers)}")


def test_a_transport_bug_is_raised_without_secrets() -> None:
    runner = tool(
        url="https://127.0.0.1/v?key={{secrets.API_TOKEN}}",
        headers={"Authorization": "Bearer {{secrets.API_TOKEN}}"},
    )
    with pytest.raises(HttpToolCrashed) as caught:
        call(runner, {"vendor_id": "V-1"}, secrets={"API_TOKEN": SECRET}, http=_BrokenTransport())
    assert "RuntimeError: bug while sending" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert caught.value.__context__ is None
    assert caught.value.__cause__ is None


# --- definition and construction ---------------------------------------------------------------


def test_definition_comes_from_the_spec() -> None:
    runner = tool(url="https://127.0.0.1/v/{{vendor_id}}")
    assert runner.name == "vendor_lookup"
    assert runner.kind == "http"
    assert runner.definition() == {
        "name": "vendor_lookup",
        "description": "Look a vendor up.",
        "input_schema": {
            "type": "object",
            "properties": {"vendor_id": {"type": "string"}},
            "required": ["vendor_id"],
        },
    }


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"body": {"all": "{{secrets}}"}}, "must name one secret"),
        ({"input_schema": {"type": "objekt"}}, "input_schema is not a valid JSON Schema"),
    ],
)
def test_unworkable_specs_are_config_errors(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        tool(url="https://127.0.0.1/v", **fields)
