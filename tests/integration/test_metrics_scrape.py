"""A conversation through `posthoc serve` and a `posthoc worker` (real processes, PostgreSQL,
Redis, the fake Messages API), then both `/metrics` scraped: every metric posthoc exports is
there, with the values the ledger and the fake say it must have."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from analyzers.fakes import (
    FakeMessagesAPI,
    FakeReply,
    HttpError,
    serve_fake_messages_api,
)
from tests.integration.conftest import (
    POSTHOC,
    REDIS_URL,
    Broker,
    Fake,
    Fleet,
    PacedAnalyst,
    _check_redis,
    _delete_queue,
    wait_for,
)
from tests.worker.http.payloads import body_of, standard_headers, standard_payload
from tests.worker.http.server import Server
from tests.worker.http.test_serve_process import free_port
from worker.ledger import Ledger

pytestmark = pytest.mark.integration

SECRET = "whsec_cG9zdGhvYy1tZXRyaWNzLXRlc3Qta2V5LTMyYnl0ZXM="
ANALYZER = """
kind: analyzer
name: metered
version: "2.1.0"
description: Follow-ups, delivered to a JSONL file.
trigger: {}
instructions: Record each follow-up a person must act on today.
tools: [get_turns]
outputs:
  - name: follow_up
    description: A follow-up a person must act on.
    model: follow_up
    cardinality: many
    required: false
sinks:
  - type: jsonl
    path: {path}
"""


class OverloadedOnce(PacedAnalyst):
    """The simulated analyst, after answering the very first request with a 529."""

    def __init__(self) -> None:
        super().__init__(latency=0.1)
        self._first = True
        self._guard = threading.Lock()

    def __call__(self, body: dict[str, object]) -> FakeReply | HttpError:  # type: ignore[override]
        with self._guard:
            first, self._first = self._first, False
        return HttpError(529) if first else super().__call__(body)


@pytest.fixture
def broker() -> Iterator[Broker]:
    _check_redis()
    found = Broker("redis", REDIS_URL, f"posthoc.test.{uuid.uuid4().hex[:10]}")
    try:
        yield found
    finally:
        _delete_queue(found)


@pytest.fixture
def fake_model() -> Iterator[Fake]:
    analyst = OverloadedOnce()
    with serve_fake_messages_api(FakeMessagesAPI(responder=analyst)) as base_url:
        yield Fake(base_url, analyst)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def test_serve_and_worker_metrics_after_one_conversation(
    tmp_path: Path, fleet: Fleet, ledger: Ledger, database_url: str, fake_model: Fake
) -> None:
    analyzers = tmp_path / "analyzers"
    analyzers.mkdir()
    out = tmp_path / "results.jsonl"
    (analyzers / "metered.yaml").write_text(ANALYZER.replace("{path}", str(out)))
    catalog = {"analyzer_dirs": json.dumps([str(analyzers)]), "builtin_analyzers": "false"}
    serve_port, health_port = free_port(), free_port()
    sources = {"crm": {"platform": "standard", "tenant": "acme", "secrets": [SECRET]}}
    env = fleet.environment(concurrency=4, webhook_sources=json.dumps(sources), **catalog)
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(  # noqa: S603 - our own entry point
        [str(POSTHOC), "serve", "--port", str(serve_port)],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        fleet.start("W", concurrency=4, health_port=str(health_port), **catalog)
        server = Server(f"http://127.0.0.1:{serve_port}")

        def serving() -> bool:
            try:
                return server.request("GET", "/readyz").status == 200
            except OSError:
                return False

        wait_for(serving, timeout=60, what="posthoc serve to be ready", fleet=fleet)
        body = body_of(standard_payload("metrics-1"))
        headers = standard_headers(body, SECRET, at=time.time())
        accepted = server.request("POST", "/v1/webhooks/crm", body, headers)
        assert accepted.status == 202, accepted.body
        [run_id] = accepted.body["run_ids"]
        assert server.request("POST", "/v1/webhooks/crm", body, headers).status == 200
        forged = standard_headers(body, "whsec_" + "A" * 44, at=time.time())
        assert server.request("POST", "/v1/webhooks/crm", body, forged).status == 401

        def delivered() -> bool:
            return out.exists() and bool(out.read_text().strip())

        wait_for(delivered, timeout=90, what="the run to finish and be delivered", fleet=fleet)
        # One sweep (every second) after the run: queue depth and oldest waiting are set.
        time.sleep(2.5)
        run = ledger.get_run(run_id)
        assert run.status == "succeeded"

        intake = scrape(serve_port)
        for answer, count in (("accepted", 1), ("duplicate", 1), ("unauthorized", 1)):
            assert (
                value(intake, "posthoc_webhook_requests_total", source="crm", answer=answer)
                == count
            )

        worker = scrape(health_port)
        run_labels = {"analyzer": "metered", "version": "2.1.0", "status": "succeeded"}
        assert value(worker, "posthoc_runs_total", **run_labels) == 1
        assert (
            value(
                worker, "posthoc_run_duration_seconds_count", analyzer="metered", status="succeeded"
            )
            == 1
        )
        model = "claude-sonnet-5-5"  # the default model: the analyzer names none
        # Three turns of the simulated analyst (the 529 was retried inside the first call).
        assert value(worker, "posthoc_model_request_duration_seconds_count", model=model) == 3
        assert value(worker, "posthoc_model_retries_total", cause="overloaded") == 1
        for kind, spent in (
            ("input", run.input_tokens),
            ("output", run.output_tokens),
            ("cache_read", run.cache_read_input_tokens),
            ("cache_write", run.cache_creation_input_tokens),
        ):
            assert (
                value(worker, "posthoc_model_tokens_total", analyzer="metered", kind=kind) == spent
            )
        assert run.output_tokens
        assert value(
            worker, "posthoc_model_cost_dollars_total", analyzer="metered"
        ) == pytest.approx(run.cost_usd)
        assert value(worker, "posthoc_deliveries_total", sink="jsonl", status="delivered") == 1
        assert value(worker, "posthoc_queue_depth") == 0
        assert value(worker, "posthoc_queue_oldest_waiting_seconds") == 0
        assert value(worker, "posthoc_leases_reclaimed_total") == 0
        assert value(worker, "posthoc_worker_runs_in_flight") == 0
        assert value(worker, "posthoc_worker_free_slots") == 4
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        log.close()
