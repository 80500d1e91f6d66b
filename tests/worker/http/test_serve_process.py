"""`posthoc serve` as a process: it starts from settings alone, answers health and readiness on
the embedded ledger and queue, takes a signed webhook, and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.worker.http.payloads import body_of, retell_headers, retell_payload
from tests.worker.http.server import Server

POSTHOC = Path(sys.executable).parent / "posthoc"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_starts_answers_and_stops(tmp_path: Path) -> None:
    port = free_port()
    sources = {"rt": {"platform": "retell", "tenant": "acme", "secrets": ["key_new"]}}
    env = {
        **os.environ,
        "POSTHOC_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        "POSTHOC_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}",
        "POSTHOC_WEBHOOK_SOURCES": json.dumps(sources),
        "POSTHOC_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(  # noqa: S603 - our own entry point
        [str(POSTHOC), "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    server = Server(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = server.request("GET", "/healthz")
                break
            except OSError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "posthoc serve did not start"
                time.sleep(0.1)
        assert health.body == {"status": "ok"}
        assert server.request("GET", "/readyz").status == 200
        body = body_of(retell_payload())
        answer = server.request(
            "POST", "/v1/webhooks/rt", body, retell_headers(body, "key_new", at=time.time())
        )
        assert answer.status == 202, answer.body
        assert answer.body["run_ids"]
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode("utf-8", "replace")
    # uvicorn shuts down gracefully, then re-raises the signal it caught, as a process should.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "key_new" not in output
    assert "4411" not in output  # no transcript text in the logs
