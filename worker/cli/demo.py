"""`posthoc demo`: the whole pipeline on the examples, with a simulated model when there is no
API key. The simulated parts are said plainly: a person reading the output must never take a
simulated analysis for a real one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from analyzers.fakes import FakeMessagesAPI, serve_fake_messages_api, simulated_analyst
from analyzers.model.protocol import ModelClient
from analyzers.tools.base import HttpRequest, HttpResponse

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"

SIMULATED_BANNER = """\
posthoc demo: the model is SIMULATED.
  No ANTHROPIC_API_KEY is set, so the analyses run against posthoc's local fake of the Messages
  API (a stand-in analyst that fills every output with placeholder values quoted from the
  transcript). The pipeline is real: ledger, triggers, procedures, tool calls, retries, results.
  The outputs are not analysis.
  To use Claude: export ANTHROPIC_API_KEY=... and run
    posthoc run examples/conversations --out results.jsonl
"""

REAL_BANNER = """\
posthoc demo: using the real model (ANTHROPIC_API_KEY is set). This spends tokens.
"""


class DemoSystems:
    """Simulated answers for the example analyzers' HTTP tools (a CRM and a procurement
    system that exist only in the examples). Any other host is refused."""

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Answer like the example systems would."""
        if request.url.startswith("https://crm.acme.example/api/v2/accounts/"):
            return HttpResponse(200, {"tier": "business", "open_tickets": 1, "simulated": True})
        if request.url.startswith("https://crm.acme.example/api/v2/tickets"):
            return HttpResponse(201, {"ticket_id": "FO-DEMO-1", "simulated": True})
        if request.url.startswith("https://procurement.globex.example/api/vendors"):
            return HttpResponse(200, {"vendorId": "V-9912", "name": "TechCorp", "simulated": True})
        return HttpResponse(404, {"error": "the demo has no such system"})


@contextlib.contextmanager
def simulated_model(*, batch: bool = False) -> Iterator[ModelClient]:
    """The real Anthropic adapter pointed at the fake Messages API with the simulated analyst
    (with `batch`, every turn through its Message Batches endpoints)."""
    from analyzers.model.anthropic import (  # noqa: PLC0415 - SDK import
        build_anthropic_model,
        build_batch_model,
    )

    api = FakeMessagesAPI(responder=simulated_analyst, batch_seconds=0.02)
    with serve_fake_messages_api(api) as base_url:
        if batch:
            yield build_batch_model(
                api_key="simulated", base_url=base_url, gather_seconds=0.05, poll_seconds=0.02
            )
        else:
            yield build_anthropic_model(api_key="simulated", base_url=base_url)
