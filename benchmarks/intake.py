"""Signed webhook intake: requests per second and p50/p99 latency of `POST /v1/webhooks/{source}`
persisting each conversation and its runs to PostgreSQL and enqueueing them on Redis, beside the
same server stack (Starlette on uvicorn, one process) answering a no-op 202 (the ceiling).

Every request is a distinct Retell `call_analyzed` delivery signed as Retell signs (HMAC over the
raw body and a millisecond timestamp), so each one verifies its signature, maps the payload,
saves the conversation, evaluates the built-in analyzers' triggers, records 3 runs and sends the
queued ones to Redis before answering 202. Requests and signatures are built before the clock
starts. The load client (asyncio, keep-alive connections) runs in this process and the server in
a child process; on a 2-core machine they share the cores with PostgreSQL and Redis, so the
ceiling is itself bounded by the client. Each figure is the median of 3 rounds.

Goal: at least 1,000 requests per second and at least 0.5 of the ceiling.

    python benchmarks/intake.py [--smoke] [--requests N] [--connections C]

`--smoke` uses an embedded SQLite ledger and queue and a few dozen requests: it checks that the
benchmark runs, not what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import verdict

SECRET = "bench_retell_key"  # noqa: S105 - a throwaway signing key for this benchmark
GOAL_RPS = 1000.0
GOAL_RATIO = 0.5
ROUNDS = 3


def retell_body(call_id: str, start_ms: int) -> bytes:
    """A `call_analyzed` delivery shaped as Retell documents it."""
    payload = {
        "event": "call_analyzed",
        "call": {
            "call_type": "phone_call",
            "call_id": call_id,
            "agent_id": "agent_bench",
            "agent_version": 1,
            "call_status": "ended",
            "start_timestamp": start_ms,
            "end_timestamp": start_ms + 61_000,
            "disconnection_reason": "user_hangup",
            "retell_llm_dynamic_variables": {"customer_name": "Ann"},
            "transcript_with_tool_calls": [
                {"role": "agent", "content": "Hello, how can I help?", "words": []},
                {"role": "user", "content": "Where is my order 4411?", "words": []},
                {
                    "role": "tool_call_invocation",
                    "tool_call_id": "t1",
                    "name": "order_lookup",
                    "arguments": '{"order_id":"4411"}',
                },
                {"role": "tool_call_result", "tool_call_id": "t1", "content": '{"s":"shipped"}'},
                {"role": "agent", "content": "It shipped yesterday.", "words": []},
            ],
            "call_analysis": {"call_successful": True, "call_summary": "Order status."},
        },
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def signed_request(body: bytes, path: str) -> bytes:
    millis = str(int(time.time() * 1000))
    digest = hmac.new(SECRET.encode(), body + millis.encode(), hashlib.sha256).hexdigest()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"x-retell-signature: v={millis},d={digest}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# -- the server, in a child process -------------------------------------------------------------


def _serve(
    connection: Connection, mode: str, database_url: str, broker_url: str, queue: str
) -> None:
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    if mode == "noop":

        async def noop(request: Request) -> Response:
            await request.body()
            return JSONResponse({"run_ids": []}, status_code=202)

        app = Starlette(routes=[Route("/v1/webhooks/{source}", noop, methods=["POST"])])
    else:
        from worker.cli.serve import build_intake
        from worker.http.app import create_app
        from worker.observability.logging import configure_logging
        from worker.settings import Settings

        configure_logging("warning", "json")  # one log line per delivery would be measured too

        sources = {"bench": {"platform": "retell", "tenant": "acme", "secrets": [SECRET]}}
        settings = Settings(
            database_url=database_url,
            broker_url=broker_url,
            queue=queue,
            webhook_sources=json.dumps(sources),
            log_level="warning",
        )
        app = create_app(build_intake(settings))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    connection.send(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False, log_config=None)
    uvicorn.Server(config).run(sockets=[sock])


@contextmanager
def server(mode: str, database_url: str, broker_url: str, queue: str) -> Iterator[int]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_serve, args=(child, mode, database_url, broker_url, queue), daemon=True
    )
    process.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("the benchmark server did not start")
        port = int(parent.recv())
        _wait_until_listening(port)
        yield port
    finally:
        process.terminate()
        process.join(10)


def _wait_until_listening(port: int) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the benchmark server is not listening")


# -- the load client ----------------------------------------------------------------------------


@dataclass
class Round:
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds


async def _connection(
    port: int, requests: list[bytes], latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = int(status_line.split()[1])
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def load(port: int, requests: list[bytes], connections: int) -> Round:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    shares = [requests[i::connections] for i in range(connections)]

    async def all_connections() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(_connection(port, share, latencies, statuses) for share in shares))
        return time.perf_counter() - started

    seconds = asyncio.run(all_connections())
    return Round(seconds, latencies, statuses)


def build_requests(count: int, tag: str) -> list[bytes]:
    start_ms = int(time.time() * 1000) - 120_000
    return [
        signed_request(retell_body(f"call-{tag}-{n}", start_ms), "/v1/webhooks/bench")
        for n in range(count)
    ]


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(
    mode: str, database_url: str, broker_url: str, queue: str, count: int, connections: int
) -> list[Round]:
    rounds = []
    with server(mode, database_url, broker_url, queue) as port:
        load(port, build_requests(min(count, 50), f"warm-{mode}"), connections)  # warm-up
        for number in range(ROUNDS):
            requests = build_requests(count, f"{mode}-{number}-{uuid.uuid4().hex[:6]}")
            rounds.append(load(port, requests, connections))
    return rounds


def report(name: str, rounds: list[Round]) -> float:
    rps = statistics.median(r.rps for r in rounds)
    p50 = statistics.median(percentile(r.latencies, 0.5) for r in rounds) * 1000
    p99 = statistics.median(percentile(r.latencies, 0.99) for r in rounds) * 1000
    statuses: dict[int, int] = {}
    for r in rounds:
        for status, n in r.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    print(f"  {name:<34} {rps:8.0f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   {statuses}")
    return rps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="embedded ledger, a few requests")
    parser.add_argument("--requests", type=int, default=None, help="per round (3000)")
    parser.add_argument("--connections", type=int, default=None, help="keep-alive clients (32)")
    args = parser.parse_args(argv)
    count = args.requests or (30 if args.smoke else 3000)
    connections = args.connections or (4 if args.smoke else 32)
    print(
        f"intake benchmark{' (smoke)' if args.smoke else ''}: {count} signed Retell deliveries "
        f"per round, {connections} connections, median of {ROUNDS} rounds"
    )
    with _backends(args.smoke) as (database_url, broker_url, queue, label):
        intake = report(
            f"webhook intake ({label})",
            measure("intake", database_url, broker_url, queue, count, connections),
        )
        ceiling = report(
            "no-op 202 (ceiling)",
            measure("noop", database_url, broker_url, queue, count, connections),
        )
    ratio = intake / ceiling
    print(
        f"  ratio {ratio:.2f} of the ceiling "
        f"(goal >= {GOAL_RATIO}: {verdict(ratio >= GOAL_RATIO)}); "
        f"{intake:.0f} req/s (goal >= {GOAL_RPS:.0f}: {verdict(intake >= GOAL_RPS)})"
    )
    return 0


@contextmanager
def _backends(smoke: bool) -> Iterator[tuple[str, str, str, str]]:
    if smoke:
        with tempfile.TemporaryDirectory() as folder:
            yield (
                f"sqlite:///{folder}/ledger.sqlite3",
                f"sqla+sqlite:///{folder}/broker.sqlite3",
                "posthoc.bench",
                "SQLite, embedded queue",
            )
        return
    from benchmarks.throughput import REDIS_URL, check_redis, delete_queue, throwaway_database

    check_redis()
    queue = f"posthoc.bench.intake.{uuid.uuid4().hex[:8]}"
    try:
        with throwaway_database() as database_url:
            yield database_url, REDIS_URL, queue, "PostgreSQL + Redis"
    finally:
        delete_queue(queue)


if __name__ == "__main__":
    sys.exit(main())
