"""Signed webhook intake: requests per second and p50/p99 latency of `POST /v1/webhooks/{source}`
persisting each conversation and its runs to PostgreSQL and enqueueing them on Redis, beside the
same server stack (Starlette on uvicorn, the same number of processes: `--workers`, default 2)
answering a no-op 202 (the ceiling).

Every request is a distinct Retell `call_analyzed` delivery signed as Retell signs (HMAC over the
raw body and a millisecond timestamp), so each one verifies its signature, maps the payload,
saves the conversation, evaluates the built-in analyzers' triggers, records 3 runs and sends the
queued ones to Redis before answering 202. Requests and signatures are built before the clock
starts. The load client (asyncio, keep-alive connections) runs in this process and the servers in
child processes, built from settings as `posthoc serve --workers N` builds them; on a 2-core
machine they share the cores with PostgreSQL and Redis, so the ceiling is itself bounded by the
client. Each figure is the median of 3 rounds; the machine's load average is printed before and
after (on a shared machine it says how much of the cores the figures had). Beside each rate is
the server's CPU per request (its processes' user and system time over the requests), which
hardly depends on what else the machine runs.

Goal: at least 1,000 requests per second and at least 0.5 of the ceiling.

    python benchmarks/intake.py [--smoke] [--requests N] [--connections C] [--workers W]

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
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

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


def noop_app() -> Any:
    """The ceiling: the same server stack answering every delivery with a no-op 202."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def noop(request: Request) -> Response:
        await request.body()
        return JSONResponse({"run_ids": []}, status_code=202)

    return Starlette(routes=[Route("/v1/webhooks/{source}", noop, methods=["POST"])])


def serve_noop(sock: Any) -> None:
    """A ceiling server process (spawned by `ServerProcesses`, as `posthoc serve` spawns its)."""
    import uvicorn

    config = uvicorn.Config(
        "benchmarks.intake:noop_app",
        factory=True,
        log_level="warning",
        access_log=False,
        log_config=None,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _serve(
    connection: Connection,
    mode: str,
    database_url: str,
    broker_url: str,
    queue: str,
    workers: int,
) -> None:
    import os

    from worker.cli.serve import serve_on_socket
    from worker.http.processes import ServerProcesses
    from worker.observability.logging import configure_logging

    configure_logging("warning", "json")  # the supervisor's own lines (children started)

    sources = {"bench": {"platform": "retell", "tenant": "acme", "secrets": [SECRET]}}
    # The server processes build the app from settings, as `posthoc serve --workers` does.
    os.environ.update(
        {
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "POSTHOC_DATABASE_URL": database_url,
            "POSTHOC_BROKER_URL": broker_url,
            "POSTHOC_QUEUE": queue,
            "POSTHOC_WEBHOOK_SOURCES": json.dumps(sources),
            "POSTHOC_LOG_LEVEL": "warning",  # a log line per delivery would be measured too
            "POSTHOC_LOG_FORMAT": "json",
        }
    )
    if mode == "intake" and workers > 1:
        from worker.ledger import Ledger

        with Ledger.from_url(database_url) as ledger:
            ledger.migrate()  # once, as `posthoc serve --workers` does
    # Both servers run as `posthoc serve --workers N` runs: N processes, each with its own
    # socket on the port (SO_REUSEPORT), supervised by this one.
    serve = serve_on_socket if mode == "intake" else serve_noop
    ServerProcesses(serve, "127.0.0.1", 0, workers).run(ready=connection.send)


@contextmanager
def server(
    mode: str, database_url: str, broker_url: str, queue: str, workers: int
) -> Iterator[tuple[int, int]]:
    """The server's port, and the pid of its supervising process."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_serve, args=(child, mode, database_url, broker_url, queue, workers)
    )
    process.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("the benchmark server did not start")
        port = int(parent.recv())
        _wait_until_listening(port)
        assert process.pid is not None
        yield port, process.pid
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
    server_cpu_seconds: float = 0.0

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
    mode: str,
    database_url: str,
    broker_url: str,
    queue: str,
    count: int,
    connections: int,
    workers: int,
) -> list[Round]:
    rounds = []
    with server(mode, database_url, broker_url, queue, workers) as (port, pid):
        load(port, build_requests(min(count, 50), f"warm-{mode}"), connections)  # warm-up
        for number in range(ROUNDS):
            requests = build_requests(count, f"{mode}-{number}-{uuid.uuid4().hex[:6]}")
            before = _tree_cpu(pid)
            measured = load(port, requests, connections)
            measured.server_cpu_seconds = _tree_cpu(pid) - before
            rounds.append(measured)
    return rounds


def _tree_cpu(pid: int) -> float:
    """CPU seconds so far of the server: its supervisor and every process under it."""
    from benchmarks.throughput import cpu_seconds, process_tree

    return sum(cpu_seconds(each) for each in process_tree(pid))


def writer_costs(
    database_url: str, broker_url: str, queue: str, count: int, rounds: int = ROUNDS
) -> None:
    """CPU time per delivery in the thread that records and publishes, in this process: each
    delivery in its own transaction and its runs sent one `send_task` at a time (the baseline),
    against batches of 32 in one transaction and one `RunPublisher` call. CPU time, unlike the
    rates above, hardly depends on what else the machine runs; the database's and broker's own
    work is not in it."""
    from datetime import UTC, datetime

    from worker.catalog import Catalog
    from worker.engine.celery_app import TASK_NAME, create_celery
    from worker.engine.publishing import RunPublisher
    from worker.http.adapters import Mapped, parse_payload
    from worker.http.recording import Accept, DeliveryWriter, LogEntry
    from worker.ledger import Ledger
    from worker.ledger.bulk import RunsToRecord
    from worker.settings import Settings

    catalog = Catalog.load()
    app = create_celery(Settings(broker_url=broker_url, queue=queue))
    publisher = RunPublisher(app)

    def deliveries(tag: str) -> list[Accept]:
        start_ms = int(time.time() * 1000) - 120_000
        made = []
        for n in range(count):
            payload = json.loads(retell_body(f"cpu-{tag}-{n}", start_ms))
            mapped = parse_payload("retell", payload, {}, tenant="acme")
            assert isinstance(mapped, Mapped)
            log = LogEntry(
                datetime.now(UTC),
                "bench",
                "acme",
                mapped.event_type,
                mapped.event_id,
                "valid",
                202,
                "accepted",
            )
            plans = catalog.plan(mapped.conversation, None, 5)
            made.append(Accept(log, RunsToRecord(mapped.conversation, plans, "webhook")))
        return made

    def one_by_one(writer: DeliveryWriter, ledger: Ledger, items: list[Accept]) -> None:
        for item in items:
            with ledger.transaction() as connection:
                [answer] = writer(connection, [item])
            for run_id in answer.to_send:
                app.send_task(TASK_NAME, args=[run_id], queue=queue)

    def batched(writer: DeliveryWriter, ledger: Ledger, items: list[Accept]) -> None:
        for start in range(0, len(items), 32):
            with ledger.transaction() as connection:
                answers = writer(connection, items[start : start + 32])
            publisher([run_id for answer in answers for run_id in answer.to_send])

    with Ledger.from_url(database_url) as ledger, warnings.catch_warnings():
        # kombu's embedded (SQLAlchemy) queue, which --smoke publishes to in this process,
        # maps its tables with a loader strategy SQLAlchemy 2.1 deprecates.
        warnings.filterwarnings("ignore", "The ``noload`` loader strategy", DeprecationWarning)
        ledger.migrate()
        writer = DeliveryWriter(ledger)
        figures: dict[str, list[float]] = {"one": [], "batched": []}
        for number in range(rounds):
            for name, way in (("one", one_by_one), ("batched", batched)):
                items = deliveries(f"{name}-{number}-{uuid.uuid4().hex[:6]}")
                started = time.thread_time()
                way(writer, ledger, items)
                figures[name].append((time.thread_time() - started) / count * 1000)
    app.close()
    one = statistics.median(figures["one"])
    batch = statistics.median(figures["batched"])
    print(
        f"  recording + publishing, CPU per delivery: {one:.2f} ms one at a time, "
        f"{batch:.2f} ms in batches of 32 (ratio {one / batch:.1f}x less)"
    )


def report(name: str, rounds: list[Round]) -> float:
    rps = statistics.median(r.rps for r in rounds)
    p50 = statistics.median(percentile(r.latencies, 0.5) for r in rounds) * 1000
    p99 = statistics.median(percentile(r.latencies, 0.99) for r in rounds) * 1000
    cpu = statistics.median(r.server_cpu_seconds / len(r.latencies) for r in rounds) * 1000
    statuses: dict[int, int] = {}
    for r in rounds:
        for status, n in r.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    print(
        f"  {name:<34} {rps:8.0f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   "
        f"server CPU {cpu:5.2f} ms/req   {statuses}"
    )
    return rps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="embedded ledger, a few requests")
    parser.add_argument("--requests", type=int, default=None, help="per round (3000)")
    parser.add_argument("--connections", type=int, default=None, help="keep-alive clients (32)")
    parser.add_argument(
        "--workers", type=int, default=None, help="server processes, both servers (2; smoke 1)"
    )
    args = parser.parse_args(argv)
    count = args.requests or (30 if args.smoke else 3000)
    connections = args.connections or (4 if args.smoke else 32)
    workers = args.workers or (1 if args.smoke else 2)
    print(
        f"intake benchmark{' (smoke)' if args.smoke else ''}: {count} signed Retell deliveries "
        f"per round, {connections} connections, {workers} server process(es), median of "
        f"{ROUNDS} rounds; load average {_load()}"
    )
    with _backends(args.smoke) as (database_url, broker_url, queue, label):
        intake = report(
            f"webhook intake ({label})",
            measure("intake", database_url, broker_url, queue, count, connections, workers),
        )
        ceiling = report(
            "no-op 202 (ceiling)",
            measure("noop", database_url, broker_url, queue, count, connections, workers),
        )
        if args.smoke:
            writer_costs(database_url, broker_url, queue, 4, rounds=1)
        else:
            writer_costs(database_url, broker_url, queue, 96)
    ratio = intake / ceiling
    print(
        f"  ratio {ratio:.2f} of the ceiling "
        f"(goal >= {GOAL_RATIO}: {verdict(ratio >= GOAL_RATIO)}); "
        f"{intake:.0f} req/s (goal >= {GOAL_RPS:.0f}: {verdict(intake >= GOAL_RPS)}); "
        f"load average {_load()}"
    )
    return 0


def _load() -> str:
    """The machine's load averages (1, 5, 15 min): on a shared 2-core machine they say how
    much of it the figures had."""
    import os

    return " ".join(f"{value:.2f}" for value in os.getloadavg())


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
