"""A small world for effect tests: the `escalation_triage` example analyzer and its
`escalation_ticket` procedure pointed at a local CRM server, an escalated conversation, and a
model stand-in that follows the procedure whatever the runtime's exact wording.

Shared by the in-process engine tests and the child process the kill test SIGKILLs.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from analyzers.errors import TransientModelError
from analyzers.model.protocol import ModelRequest, ModelTurn
from analyzers.testing import reply, text, tool_call
from schemas import Conversation

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SECRETS = {"ACME_CRM_TOKEN": "crm-t0ken-never-shown"}
TICKET = {"ticket_id": "T-77", "priority": "high", "created_now": True}
CHURN = {"level": "low", "signals": ["asked for a manager"]}


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class CrmServer(ThreadingHTTPServer):
    """The CRM behind the example's tools: an account lookup and the ticket upsert.

    `hold_tickets`, when set by a test, makes a ticket request wait (after it was received and
    noted) until `release` is set: the moment a kill test strikes.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CrmHandler)
        self.received: list[Received] = []
        self.ticket_arrived = threading.Event()
        self.hold_tickets = False
        self.release = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def tickets(self) -> list[Received]:
        return [r for r in self.received if r.path.startswith("/api/v2/tickets")]

    def __enter__(self) -> CrmServer:
        threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class _CrmHandler(BaseHTTPRequestHandler):
    server: CrmServer

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {key.lower(): value for key, value in self.headers.items()}
        self.server.received.append(
            Received(self.command, self.path, headers, json.loads(raw) if raw else None)
        )
        if self.path.startswith("/api/v2/accounts/"):
            self._reply(200, {"account_id": self.path.rsplit("/", 1)[-1], "tier": "business"})
            return
        if self.path.startswith("/api/v2/tickets"):
            self.server.ticket_arrived.set()
            if self.server.hold_tickets:
                self.server.release.wait(30)
            self._reply(201, {"ticket_id": TICKET["ticket_id"], "status": "open"})
            return
        self._reply(404, {"error": "no such route"})

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client is gone (killed): nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def write_definitions(
    folder: Path, port: int, *, dry_run: bool = False, ticket_headers: dict[str, str] | None = None
) -> tuple[Path, Path]:
    """The example analyzer and procedure, with the CRM at `127.0.0.1:port` (over plain http,
    allowed to this machine only), in `folder`; returns (analyzer dir, procedure dir).
    `ticket_headers` are added to `ticket_upsert`'s headers."""
    analyzer = yaml.safe_load((EXAMPLES / "analyzers" / "escalation_triage.yaml").read_text())
    for tool in analyzer["tools"]:
        if isinstance(tool, dict):
            tool["url"] = tool["url"].replace(
                "https://crm.acme.example", f"http://127.0.0.1:{port}"
            )
            tool["allowed_hosts"] = [f"127.0.0.1:{port}"]
            if tool["name"] == "ticket_upsert":
                tool["headers"].update(ticket_headers or {})
    analyzer["sinks"] = []
    analyzer["dry_run"] = dry_run
    analyzers_dir, procedures_dir = folder / "analyzers", folder / "procedures"
    analyzers_dir.mkdir(parents=True, exist_ok=True)
    procedures_dir.mkdir(parents=True, exist_ok=True)
    (analyzers_dir / "escalation_triage.yaml").write_text(yaml.safe_dump(analyzer))
    procedure = (EXAMPLES / "procedures" / "escalation_ticket.yaml").read_text()
    (procedures_dir / "escalation_ticket.yaml").write_text(procedure)
    return analyzers_dir, procedures_dir


def escalated_conversation(conversation_id: str = "c-escalated") -> Conversation:
    return Conversation.model_validate(
        {
            "conversation_id": conversation_id,
            "tenant_id": "acme",
            "agent_id": "support-bot",
            "channel": "voice",
            "started_at": "2026-11-20T09:00:00Z",
            "ended_at": "2026-11-20T09:06:00Z",
            "outcome": "escalated",
            "dynamic_variables": {"customer_name": "Dana"},
            "turns": [
                {"role": "user", "text": "My router drops every hour. Account ACC-10442."},
                {"role": "agent", "text": "I am sorry. I have checked the line from here."},
                {"role": "user", "text": "Please put me through to a technician."},
                {"role": "agent", "text": "I am escalating this to our field team now."},
            ],
        }
    )


@dataclass
class ProcedureFollower:
    """A `ModelClient` that plays the agent: it answers whatever the running procedure asks
    for (parameters, a condition), records both outputs once, and otherwise ends its turn.

    With `fail_after_ticket` it raises one transient error on the first model call after the
    CRM received a ticket request: the run then fails after its write, as in issue 7.
    """

    server: CrmServer | None = None
    fail_after_ticket: bool = False
    requests: list[ModelRequest] = field(default_factory=list)
    failed: bool = False

    async def complete(self, request: ModelRequest) -> ModelTurn:
        self.requests.append(request)
        if (
            self.fail_after_ticket
            and not self.failed
            and self.server is not None
            and self.server.tickets()
        ):
            self.failed = True
            raise TransientModelError("overloaded (529)")
        content = request.messages[-1]["content"]
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        said = "\n".join(b["text"] for b in blocks if b.get("type") == "text")
        if not said:
            return reply(text("Noted."))  # only tool results came back
        if "provide_parameters" in said:
            values = {"account_id": "ACC-10442", "issue_summary": "The router drops hourly."}
            return reply(tool_call("provide_parameters", {"values": values}))
        if "decide_condition" in said:
            decision = {"holds": False, "reason": "No threat to leave (turns 0-3)."}
            return reply(tool_call("decide_condition", decision))
        if not _recorded(request):
            return reply(
                tool_call("record_ticket", {"value": TICKET, "evidence_turns": [3]}),
                tool_call("record_churn_risk", {"value": CHURN, "evidence_turns": [2]}),
            )
        return reply(text("Done."))

    async def count_tokens(self, request: ModelRequest) -> int:
        return 1000


def _recorded(request: ModelRequest) -> bool:
    """Whether this attempt's exchange already holds the record calls."""
    return any(
        block.get("type") == "tool_use" and block.get("name") == "record_ticket"
        for message in request.messages
        if message["role"] == "assistant"
        for block in message["content"]
    )
