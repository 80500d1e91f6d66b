"""Write effects of HTTP tools, through the real `HttpxTransport` to a local server: the
idempotency key, the record before and after the request, replay, re-sending a pending effect
with the same key, dry run; and the argument encodings a model can get wrong (a non-ASCII
header value), which are tool errors it can correct."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from analyzers.tools.base import HttpRequest, HttpResponse, ReadCoverage, ToolContext
from analyzers.tools.base import ToolOutcome as Outcome
from analyzers.tools.effects import (
    InMemoryEffectStore,
    RunEffects,
    effect_scope,
    idempotency_key,
)
from analyzers.tools.http import HttpToolRunner, address_refusal, url_refusal
from schemas.analyzer import AnalyzerSpec, HttpTool, split_host_port
from schemas.result import WriteEffect
from tests.analyzers.test_http_tools import (
    CONVERSATION,
    _Server,
    base,
)
from worker.http_transport import HttpxTransport

SECRET = "tok-s3cr3t-value"


@pytest.fixture
def server() -> Iterator[_Server]:
    """The HTTP tool tests' local server: it notes every request and echoes POSTs back."""
    local = _Server()
    thread = threading.Thread(target=local.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield local
    local.release.set()
    local.shutdown()
    local.server_close()
    thread.join(5)


TICKET = {"account_id": "ACC-1", "priority": "high", "summary": "Router down"}


def ticket_tool(server: _Server, **fields: Any) -> HttpToolRunner:
    spec: dict[str, Any] = {
        "name": "ticket_upsert",
        "description": "Open a ticket.",
        "method": "POST",
        "url": base(server) + "/tickets",
        "headers": {"Authorization": "Bearer {{secrets.TOKEN}}"},
        "body": {
            "account_id": "{{account_id}}",
            "priority": "{{priority}}",
            "summary": "{{summary}}",
        },
        "input_schema": {
            "type": "object",
            "properties": {
                "account_id": {"type": "string"},
                "priority": {"type": "string"},
                "summary": {"type": "string"},
            },
            "required": ["account_id", "priority", "summary"],
        },
        "allowed_hosts": [f"127.0.0.1:{server.server_address[1]}"],
    }
    return HttpToolRunner(HttpTool.model_validate({**spec, **fields}))


def call(
    runner: HttpToolRunner,
    arguments: dict[str, Any],
    effects: RunEffects | None,
    *,
    step: tuple[str, int] | None = None,
) -> Outcome:
    async def go() -> Outcome:
        async with HttpxTransport() as transport:
            context = ToolContext(
                conversation=CONVERSATION,
                coverage=ReadCoverage(total_turns=0),
                http=transport,
                secrets={"TOKEN": SECRET},
                effects=effects,
                procedure_step=step,
            )
            return await runner.call(arguments, context)

    return asyncio.run(go())


def keys_sent(server: _Server) -> list[str | None]:
    return [received.headers.get("idempotency-key") for received in server.received]


# --- the effect declaration -------------------------------------------------------------------


def test_effect_defaults_to_read_for_get_and_write_otherwise() -> None:
    base_fields = {"name": "t", "description": "d", "url": "https://a.example/x"}
    hosts = {"allowed_hosts": ["a.example"]}
    assert HttpTool.model_validate({**base_fields, **hosts}).effect == "read"
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert HttpTool.model_validate({**base_fields, **hosts, "method": method}).effect == "write"
    # Declared explicitly, either way round.
    declared = {**base_fields, **hosts, "method": "POST", "effect": "read"}
    assert HttpTool.model_validate(declared).effect == "read"
    assert HttpTool.model_validate({**base_fields, **hosts, "effect": "write"}).effect == "write"


def test_the_idempotency_header_must_be_a_header_name() -> None:
    fields = {"name": "t", "description": "d", "url": "https://a.example/x"}
    with pytest.raises(ValueError, match="idempotency_header"):
        HttpTool.model_validate(
            {**fields, "allowed_hosts": ["a.example"], "idempotency_header": "Bad Header:"}
        )


# --- writes: keyed, recorded, replayed ----------------------------------------------------------


def test_a_write_carries_a_key_and_a_retried_run_replays_its_recorded_outcome(
    server: _Server,
) -> None:
    store = InMemoryEffectStore()
    runner = ticket_tool(server)

    first = call(runner, TICKET, RunEffects("run-1", store))

    assert not first.is_error, first.output
    key = idempotency_key("run-1", effect_scope("ticket_upsert", None), 1)
    assert first.effect == WriteEffect(idempotency_key=key)
    assert keys_sent(server) == [key]
    [record] = store.records.values()
    assert (record.state, record.status_code, record.sends) == ("done", 200, 1)
    assert SECRET not in json.dumps(record.output)

    # The same run again (a retry): same place, same key, the recorded outcome, no request.
    again = call(runner, TICKET, RunEffects("run-1", store))

    assert again.output == first.output
    assert again.effect == WriteEffect(idempotency_key=key, replayed=True)
    assert len(server.received) == 1


def test_each_write_of_a_run_and_each_run_has_its_own_key(server: _Server) -> None:
    store = InMemoryEffectStore()
    runner = ticket_tool(server)
    effects = RunEffects("run-1", store)
    call(runner, TICKET, effects)
    call(runner, {**TICKET, "summary": "Second"}, effects)
    call(runner, TICKET, RunEffects("run-2", store))
    call(runner, TICKET, RunEffects("run-2", store), step=("escalation_ticket", 3))

    sent = keys_sent(server)
    assert len(sent) == len(set(sent)) == 4
    assert sent[3] == idempotency_key("run-2", "procedure:escalation_ticket:step:3", 1)


def test_the_key_header_is_configurable(server: _Server) -> None:
    runner = ticket_tool(server, idempotency_header="X-Request-Id")
    outcome = call(runner, TICKET, RunEffects("run-1"))
    assert outcome.effect is not None
    [received] = server.received
    assert received.headers["x-request-id"] == outcome.effect.idempotency_key
    assert "idempotency-key" not in received.headers


def test_reads_carry_no_key_and_are_not_recorded(server: _Server) -> None:
    store = InMemoryEffectStore()
    runner = ticket_tool(server, method="GET", body=None)
    for _ in range(2):
        assert call(runner, TICKET, RunEffects("run-1", store)).effect is None
    assert keys_sent(server) == [None, None]
    assert store.records == {}


def test_an_unanswered_write_stays_pending_and_goes_again_with_the_same_key(
    server: _Server,
) -> None:
    """A 500 (or a timeout) leaves it open whether the server acted: the same request again,
    in this run or a retry, is sent with the same key for the server to deduplicate."""
    store = InMemoryEffectStore()
    runner = ticket_tool(server, url=base(server) + "/fail")

    first = call(runner, TICKET, effects := RunEffects("run-1", store))
    again_in_run = call(runner, TICKET, effects)
    on_retry = call(runner, TICKET, RunEffects("run-1", store))

    assert first.is_error
    sent = keys_sent(server)
    assert len(sent) == 3
    assert len(set(sent)) == 1
    [record] = store.records.values()
    assert (record.state, record.sends) == ("pending", 3)
    assert on_retry.effect is not None
    assert (again_in_run.effect, on_retry.effect.resent) == (on_retry.effect, True)
    assert SECRET not in json.dumps(first.output)


def test_a_different_request_at_the_same_place_on_a_retry_is_its_own_effect(
    server: _Server,
) -> None:
    store = InMemoryEffectStore()
    runner = ticket_tool(server)
    call(runner, TICKET, RunEffects("run-1", store))

    other = call(runner, {**TICKET, "priority": "low"}, RunEffects("run-1", store))

    assert other.effect is not None
    assert not other.effect.replayed
    assert len(server.received) == 2
    first_key, second_key = keys_sent(server)
    assert second_key is not None
    assert first_key is not None
    assert second_key.startswith(first_key + ".")


def test_a_dry_run_describes_the_write_and_sends_nothing(server: _Server) -> None:
    store = InMemoryEffectStore()
    runner = ticket_tool(server, body={"summary": "{{summary}}", "token": "{{secrets.TOKEN}}"})

    outcome = call(runner, TICKET, RunEffects("run-1", store, dry_run=True))

    assert server.received == []
    assert store.records == {}
    assert not outcome.is_error
    assert outcome.effect == WriteEffect(dry_run=True)
    assert outcome.output.startswith("DRY RUN: nothing was sent.")
    assert f"POST {base(server)}/tickets" in outcome.output
    assert '"summary": "Router down"' in outcome.output
    assert SECRET not in outcome.output
    assert '"token": "[redacted]"' in outcome.output


def test_a_dry_run_still_makes_reads(server: _Server) -> None:
    runner = ticket_tool(server, method="GET", body=None)
    outcome = call(runner, TICKET, RunEffects("run-1", dry_run=True))
    assert not outcome.is_error
    assert len(server.received) == 1


# --- values a model chooses that cannot be sent (issue 8, item 9) ------------------------------


def test_a_non_ascii_header_value_is_a_tool_error_naming_the_header(server: _Server) -> None:
    runner = ticket_tool(server, headers={"X-Customer": "{{summary}}"})
    outcome = call(runner, {**TICKET, "summary": "José"}, RunEffects("run-1"))
    assert outcome.is_error
    assert "header 'X-Customer' cannot carry 'é'" in outcome.output
    assert "ASCII" in outcome.output
    assert server.received == []


def test_text_that_cannot_be_encoded_in_the_body_or_url_is_a_tool_error(server: _Server) -> None:
    runner = ticket_tool(server, url=base(server) + "/tickets/{{account_id}}")
    in_url = call(runner, {**TICKET, "account_id": "\ud800"}, RunEffects("run-1"))
    in_body = call(runner, {**TICKET, "summary": "bad \udfff"}, RunEffects("run-1"))
    assert in_url.is_error
    assert "URL" in in_url.output
    assert in_body.is_error
    assert "body" in in_body.output
    assert server.received == []


class _Accepting:
    """An `HttpTransport` that answers 200 to everything and keeps what it got."""

    def __init__(self) -> None:
        self.sent: list[HttpRequest] = []

    async def send(self, request: HttpRequest) -> HttpResponse:
        self.sent.append(request)
        return HttpResponse(200, {"ok": True})


_FUZZ_TOOL = HttpToolRunner(
    HttpTool.model_validate(
        {
            "name": "fuzzed",
            "description": "d",
            "method": "POST",
            "url": "https://api.example.com/items/{{a}}?q={{b}}",
            "headers": {"X-A": "{{a}}", "X-B": "pre {{b}}"},
            "body": {"a": "{{a}}", "b": ["{{b}}"], "c": "{{c}}"},
            "input_schema": {"type": "object", "properties": {"a": {}, "b": {}, "c": {}}},
            "allowed_hosts": ["api.example.com"],
        }
    )
)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arguments=st.dictionaries(st.sampled_from(["a", "b", "c", "x"]), _JSON_VALUES))
def test_fuzz_any_model_arguments_give_an_outcome_never_an_exception(
    arguments: dict[str, Any],
) -> None:
    """Whatever values the model puts into URL, headers and body: an outcome (sent, or an
    error the model reads), never an exception that would fail the run."""
    transport = _Accepting()
    context = ToolContext(
        conversation=CONVERSATION,
        coverage=ReadCoverage(total_turns=0),
        http=transport,
        effects=RunEffects("run-fuzz"),
    )
    outcome = asyncio.run(_FUZZ_TOOL.call(arguments, context))
    assert isinstance(outcome, Outcome)
    assert outcome.is_error == (transport.sent == [])
    for request in transport.sent:
        assert all(value.isascii() for value in request.headers.values())
        json.dumps(request.body, allow_nan=False).encode("utf-8")


# --- allowed_hosts entries pin ports (issue 8, item 12) -----------------------------------------


def test_an_entry_without_a_port_allows_the_default_port_only() -> None:
    assert url_refusal("https://api.example.com/x", ["api.example.com"]) is None
    assert url_refusal("https://api.example.com:443/x", ["api.example.com"]) is None
    refused = url_refusal("https://api.example.com:8443/x", ["api.example.com"])
    assert refused is not None
    assert "port 8443" in refused
    assert url_refusal("https://api.example.com:8443/x", ["api.example.com:8443"]) is None
    assert url_refusal("https://api.example.com:9000/x", ["api.example.com:8443"]) is not None
    assert url_refusal("https://api.example.com/x", ["api.example.com:8443"]) is not None
    assert url_refusal("https://api.example.com:9000/x", ["api.example.com:*"]) is None
    assert url_refusal("http://[::1]:8080/x", ["[::1]:8080"]) is None
    assert url_refusal("http://[::1]:8081/x", ["[::1]:8080"]) is not None


def test_the_pinned_port_is_checked_on_a_real_request(server: _Server) -> None:
    port = server.server_address[1]
    allowed = call(ticket_tool(server, allowed_hosts=[f"127.0.0.1:{port}"]), TICKET, None)
    other = f"127.0.0.1:{port + 1 if port < 65535 else port - 1}"
    wrong_port = call(
        ticket_tool(server, url=f"http://{other}/tickets", allowed_hosts=[f"127.0.0.1:{port}"]),
        TICKET,
        None,
    )
    assert not allowed.is_error, allowed.output
    assert wrong_port.is_error
    assert "is not in this tool's allowed_hosts" in wrong_port.output
    assert len(server.received) == 1


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("API.example.com", ("api.example.com", None, False)),
        ("api.example.com:8443", ("api.example.com", 8443, False)),
        ("api.example.com:*", ("api.example.com", None, True)),
        ("[::1]:8080", ("::1", 8080, False)),
        ("::1", ("::1", None, False)),
    ],
)
def test_allowed_host_entries_parse(entry: str, expected: tuple[str, int | None, bool]) -> None:
    assert split_host_port(entry) == expected


@pytest.mark.parametrize(
    "entry", ["api.example.com:http", "api.example.com:0", "host:70000", ":80"]
)
def test_a_malformed_allowed_host_entry_is_a_located_problem(entry: str) -> None:
    spec = {
        "name": "a",
        "description": "d",
        "instructions": "i",
        "outputs": [{"name": "o", "description": "d", "schema": {"type": "object"}}],
        "tools": [
            {
                "name": "t",
                "description": "d",
                "url": "https://api.example.com/x",
                "allowed_hosts": ["api.example.com", entry],
            }
        ],
    }
    with pytest.raises(ValidationError) as caught:
        AnalyzerSpec.model_validate(spec)
    text = str(caught.value)
    assert "tools[0].allowed_hosts[1]" in text
    assert "rule tool-host-entry" in text


# --- where a resolved name may lead (issue 8, item 12) ------------------------------------------


@pytest.mark.parametrize(
    ("host", "addresses", "private", "refused_because"),
    [
        ("crm.acme.example", ["93.184.215.14"], [], None),
        ("crm.acme.example", ["2606:2800:21f:cb07:6820:80da:af6b:8b2c"], [], None),
        ("crm.acme.example", ["127.0.0.1"], [], "non-public address"),
        ("crm.acme.example", ["::ffff:127.0.0.1"], [], "non-public address"),
        ("crm.acme.example", ["10.0.0.7"], [], "non-public address"),
        ("crm.acme.example", ["10.0.0.7"], ["10.0.0.0/8"], None),
        ("crm.acme.example", ["10.0.0.7", "192.168.0.1"], ["10.0.0.0/8"], "non-public"),
        ("crm.acme.example", ["169.254.169.254"], [], "non-public address"),
        ("crm.acme.example", ["224.0.0.1"], [], "non-public address"),
        ("crm.acme.example", [], [], "did not resolve"),
        ("crm.acme.example", ["not-an-ip"], [], "not an IP address"),
        ("localhost", ["127.0.0.1", "::1"], [], None),
        ("localhost", ["10.0.0.7"], ["10.0.0.0/8"], "not this machine"),
        ("api.localhost", ["93.184.215.14"], [], "not this machine"),
        ("127.0.0.1", [], [], None),  # a literal was allowed as written: nothing to resolve
    ],
)
def test_address_refusal(
    host: str, addresses: list[str], private: list[str], refused_because: str | None
) -> None:
    networks = [ipaddress.ip_network(net) for net in private]
    refusal = address_refusal(host, addresses, networks)
    if refused_because is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert refused_because in refusal


@settings(max_examples=300, deadline=None)
@given(
    host=st.text(max_size=30),
    addresses=st.lists(st.one_of(st.ip_addresses().map(str), st.text(max_size=20)), max_size=4),
)
def test_fuzz_address_refusal_answers_for_any_resolver_answer(
    host: str, addresses: list[str]
) -> None:
    refusal = address_refusal(host, addresses)
    assert refusal is None or refusal.startswith("refused: ")
    parsed = [ipaddress.ip_address(a) for a in addresses if _is_ip(a)]
    if refusal is None and not _is_ip(host.lower().strip("[]")):
        assert parsed
        assert len(parsed) == len(addresses)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(entry=st.text(max_size=40), url_port=st.integers(min_value=1, max_value=65535))
def test_fuzz_allowed_host_entries_parse_or_say_why(entry: str, url_port: int) -> None:
    """Any text as an `allowed_hosts` entry: parsed, or a ValueError naming the entry; and
    matching never raises."""
    problem: str | None = None
    try:
        host, port, any_port = split_host_port(entry)
    except ValueError as exc:
        problem = str(exc)
    if problem is not None:
        assert repr(entry) in problem
    else:
        assert host == host.lower()
        assert port is None or 0 < port < 65536
        assert not (any_port and port is not None)
    url_refusal(f"https://api.example.com:{url_port}/x", [entry])
