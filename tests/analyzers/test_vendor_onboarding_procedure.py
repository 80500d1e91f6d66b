"""The seed's vendor-onboarding example end to end, through `analyzers.run`.

The scripted model plays the analyst; `vendor_lookup` is a real HTTP tool sent through the
worker's real `HttpxTransport` to a local server. The procedure applies to its conversation
through the event log (the agent logged `procedure_started vendor_onboarding`); a lookup that
finds nothing (JSON null, an empty body or a 404) takes the `if` branch; a found vendor skips it;
and the execution record in the result says so, step by step, with where each value came from.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import analyzers
from analyzers.runtime.session import RunOptions
from analyzers.testing import ScriptedModel, reply, text, tool_call
from schemas import AnalysisResult, AnalyzerSpec, Procedure
from tests.analyzers.helpers import example_conversation, example_definitions
from worker.http_transport import HttpxTransport

FOUND = {"vendorId": "V-9912", "name": "TechCorp", "status": "Created"}


class _VendorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: str) -> None:
        super().__init__(("127.0.0.1", 0), _VendorHandler)
        self.answer = answer
        self.queries: list[dict[str, list[str]]] = []


class _VendorHandler(BaseHTTPRequestHandler):
    server: _VendorServer

    def do_GET(self) -> None:
        self.server.queries.append(parse_qs(urlsplit(self.path).query))
        answer = self.server.answer
        if answer == "found":
            self._reply(200, "application/json", json.dumps(FOUND).encode())
        elif answer == "json_null":
            self._reply(200, "application/json", b"null")
        elif answer == "empty":
            self._reply(200, "application/json", b"")
        elif answer == "404":
            self._reply(404, "application/json", b'{"error": "no such vendor"}')
        else:
            self._reply(500, "application/json", b'{"error": "down"}')

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def vendors(request: pytest.FixtureRequest) -> Iterator[_VendorServer]:
    server = _VendorServer(getattr(request, "param", "found"))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def local_analyzer(server: _VendorServer) -> tuple[AnalyzerSpec, list[Procedure]]:
    """The example analyzer with its `vendor_lookup` pointed at the local server."""
    analyzers_by_name, procedures = example_definitions()
    data = analyzers_by_name["vendor_onboarding_check"].model_dump(by_alias=True)
    port = server.server_address[1]
    for tool in data["tools"]:
        if isinstance(tool, dict) and tool["name"] == "vendor_lookup":
            tool["url"] = f"http://127.0.0.1:{port}/api/vendors?name={{{{name}}}}"
            tool["allowed_hosts"] = [f"127.0.0.1:{port}"]  # an entry without a port means :80
    return AnalyzerSpec.model_validate(data), procedures


def check(exists: bool) -> dict[str, Any]:
    value = {
        "vendor_name": "TechCorp",
        "exists": exists,
        "vendor_id": "V-9912" if exists else None,
        "matches_request": "yes" if exists else "no",
    }
    return {"value": value, "evidence_turns": [8]}


def run_example(server: _VendorServer, model: ScriptedModel) -> AnalysisResult:
    spec, procedures = local_analyzer(server)

    async def go() -> AnalysisResult:
        async with HttpxTransport() as transport:
            return await analyzers.run(
                spec,
                example_conversation("vendor_onboarding"),
                model=model,
                procedures=procedures,
                options=RunOptions(http=transport),
            )

    return asyncio.run(go())


def told(model: ScriptedModel) -> str:
    """Everything the runtime said to the model, as one text."""
    return "\n".join(
        str(block.get("text", ""))
        for message in model.requests[-1].messages
        if message["role"] == "user"
        for block in message["content"]
    )


@pytest.mark.parametrize("vendors", ["json_null", "empty", "404"], indirect=True)
def test_a_vendor_not_found_takes_the_if_branch(vendors: _VendorServer) -> None:
    """JSON null, an empty body and a 404 are all the result null: the `if` runs its step, and
    the one question for the parameters no variable gives comes before that step."""
    model = ScriptedModel(
        [
            reply(text("Vendor TechCorp, contact procurement@techcorp.com, CTR-2025-001.")),
            # Before step 4: one call for every parameter still unknown (only `contact`).
            reply(
                tool_call("provide_parameters", {"values": {"contact": "procurement@techcorp.com"}})
            ),
            reply(text("Given.")),
            reply(text("TechCorp is missing although turn 8 says it was created.")),
            reply(text("It does not match.")),
            reply(tool_call("record_vendor_check", check(exists=False))),
            reply(text("Recorded.")),
        ]
    )
    result = run_example(vendors, model)

    assert result.status == "succeeded", result.error
    assert model.exhausted
    assert vendors.queries == [{"name": ["TechCorp"]}]
    [record] = result.procedures
    assert (record.name, record.applies, record.path) == ("vendor_onboarding", True, "event_log")
    assert record.status == "completed"
    by_order = {step.order: step for step in record.steps}
    lookup = by_order[2]
    assert (lookup.ran, lookup.status, lookup.tool) == (True, "succeeded", "vendor_lookup")
    assert lookup.arguments == {"name": "TechCorp"}
    assert lookup.result is None
    assert [(i.name, i.value, i.source) for i in lookup.inputs] == [
        ("vendor_name", "TechCorp", "conversation_variable")
    ]
    assert (by_order[3].branch, by_order[3].decided_by) == ("taken", "expression")
    assert by_order[4].ran
    sources = {i.name: i.source for i in by_order[4].inputs}
    assert sources == {
        "vendor_name": "conversation_variable",
        "contact": "model",
        "contract_ref": "conversation_variable",
    }
    assert by_order[5].ran
    assert {p.name: (p.value, p.source) for p in record.parameters} == {
        "vendor_name": ("TechCorp", "conversation_variable"),
        "contact": ("procurement@techcorp.com", "model"),
        "contract_ref": ("CTR-2025-001", "conversation_variable"),
    }
    said = told(model)
    assert "condition `vendor_lookup.result == null` is True" in said
    assert "record a next step for procurement to create it with TechCorp" in said
    asks = [t for t in result.trace if t.tool_name == "provide_parameters"]
    assert [(t.procedure_step_order, t.succeeded) for t in asks] == [(4, True)]


def test_a_found_vendor_skips_the_if_branch(vendors: _VendorServer) -> None:
    """A found vendor makes the condition false: step 4 does not run, nothing is asked."""
    model = ScriptedModel(
        [
            reply(text("Vendor TechCorp.")),
            reply(text("V-9912 matches the request.")),
            reply(tool_call("record_vendor_check", check(exists=True))),
            reply(text("Recorded.")),
        ]
    )
    result = run_example(vendors, model)

    assert result.status == "succeeded", result.error
    assert model.exhausted
    [record] = result.procedures
    by_order = {step.order: step for step in record.steps}
    assert by_order[2].result == FOUND
    assert by_order[3].branch == "not_taken"
    assert not by_order[4].ran
    assert by_order[4].status == "skipped"
    assert by_order[4].not_run_reason == "the condition of step 3 does not hold"
    assert by_order[5].ran
    assert record.status == "completed"
    assert "provide_parameters" not in [t.tool_name for t in result.trace]
    assert "condition `vendor_lookup.result == null` is False" in told(model)


@pytest.mark.parametrize("vendors", ["error"], indirect=True)
def test_a_failing_lookup_stops_the_procedure_and_is_recorded(vendors: _VendorServer) -> None:
    """A 500 is a failure, not a null: the procedure stops at the lookup, and the record says
    the later steps did not run because of it."""
    model = ScriptedModel(
        [
            reply(text("Vendor TechCorp.")),
            reply(
                tool_call(
                    "record_vendor_check",
                    {"unknown": True, "unknown_reason": "down", "evidence_turns": []},
                )
            ),
            reply(text("Recorded.")),
        ]
    )
    result = run_example(vendors, model)

    assert result.status == "succeeded", result.error
    [record] = result.procedures
    assert (record.status, record.stopped_at) == ("stopped", 2)
    by_order = {step.order: step for step in record.steps}
    assert by_order[2].status == "failed"
    assert "HTTP 500" in (by_order[2].error or "")
    assert [by_order[n].not_run_reason for n in (3, 4, 5)] == [
        "the procedure stopped at step 2"
    ] * 3
    assert "stops here" in told(model)
