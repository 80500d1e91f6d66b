"""A webhook receiver for tests: verifies every signature (ours and the reference library's),
deduplicates on `webhook-id`, and answers what it is told to."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import standardwebhooks

from worker.sinks.webhooks import SignatureError, verify


@dataclass
class Receiver:
    """Accepts POSTs signed with any of `secrets`; `answer` picks each reply's status."""

    secrets: list[str]
    answer: Callable[[int], tuple[int, dict[str, str]]] = lambda _n: (204, {})
    delay_seconds: float = 0.0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    accepted: Counter[str] = field(default_factory=Counter)
    bad_signatures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        time.sleep(self.delay_seconds)
        try:
            verify(self.secrets, headers, body, datetime.now(UTC))
            for secret in self.secrets:  # the reference library agrees with at least one
                try:
                    standardwebhooks.Webhook(secret).verify(body, headers)
                    break
                except standardwebhooks.WebhookVerificationError:
                    continue
            else:
                raise SignatureError("the reference library disagrees")
        except SignatureError:
            with self._lock:
                self.bad_signatures += 1
            return 401, {}
        with self._lock:
            self.received.append((headers, body))
            status, extra = self.answer(len(self.received))
            if 200 <= status < 300:
                self.accepted[headers["webhook-id"]] += 1
        return status, extra

    def payloads(self) -> list[Any]:
        return [json.loads(body) for _, body in self.received]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra = self.server.receiver.handle(headers, body)
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: Receiver) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.receiver = receiver


@contextmanager
def serve_receiver(receiver: Receiver) -> Iterator[str]:
    server = _Server(receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
