"""Worker throughput against the model-bound limit, and memory, at hundreds of analyses in flight.

N conversations, one follow_ups run each, go through Redis to a real `posthoc worker` (threads
pool, one asyncio loop, concurrency C) with a PostgreSQL ledger (a throwaway database: SQLite
would be the bottleneck) and the fake Messages API answering every model turn after a fixed
latency L. The simulated analyst takes exactly 3 model turns per analysis, so a run spends 3L
waiting on the model and no worker can finish more than C / 3L runs per second: that is the
limit. Throughput is N over the wall time from the first enqueue to the last completion (the
ledger's `finished_at`), and the ratio is throughput / limit.

The baseline is the same Celery task on the prefork pool (`--pool=prefork`, P processes, one
analysis at a time each); its limit is P / 3L by the same formula. Peak RSS is the sum of
`VmHWM` over the worker's processes (the parent and, for prefork, every child; pages shared
after fork are counted once per process, so this overstates prefork slightly), read from /proc.

The fake server runs in a separate process so that its CPU is not the worker's; the machine
still has only its cores to share between the worker, the fake, PostgreSQL and Redis, so on a
2-core machine the fake's own work competes with the worker's. CPU seconds of the worker and
of the fake are printed so a reader can tell which one was saturated.

Goal: ratio at least 0.9 at 500 analyses in flight, under 1 GiB RSS.

The default latency is 10 s a turn: extended-thinking turns of a procedural agent take tens of
seconds, and what this measures is whether waiting analyses cost the worker anything. At 1 s a
turn (`--latency 1`) the same 500 in flight need 167 runs/s; each analysis costs the worker about
20 ms of CPU (most of it the SDK's streaming and HTTP), so one Python process on this 2-core
machine, shared with the fake, PostgreSQL and Redis, tops out near 45 runs/s: that figure
measures CPU per analysis, which the printed CPU seconds show directly. 3000 runs (six waves)
keep start-up and the last wave's tail from dominating the wall time.

Several latencies run in one invocation (`--latencies 10,3,1`), each with a fresh database,
queue and fake. The worker is `posthoc worker --processes P` (default: the cores here), so
the node uses every core. Beside each ratio the benchmark prints the worker's CPU per analysis
(CPU of the supervisor and its children during the measured part, over the runs) and the
raw-HTTP floor for the same calls, measured in the same invocation: the request bodies the
worker sent during its warm-up, each sent again as one keep-alive `httpx2` POST to a fake with
no latency, its SSE lines read and their JSON parsed, CPU of this process per 3 calls. The
multiple of the two is what the worker spends beyond talking HTTP.

    python benchmarks/throughput.py [--smoke] [--runs N] [--concurrency C]
                                    [--latencies 10,3,1] [--processes P]
                                    [--redis-url URL] [--postgres-admin-url URL]
                                    [--floor-calls N] [--prefork-processes P]
                                    [--baseline-runs N] [--no-baseline]
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx2
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.pool import NullPool

from analyzers.fakes import FakeReply, simulated_analyst
from benchmarks._common import JSON, RemoteFakeAPI, fake_api_in_child_process, verdict
from schemas import Conversation
from worker.engine.celery_app import TASK_NAME, create_celery
from worker.ledger import Ledger, RunPlan
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
POSTHOC = ROOT / ".venv" / "bin" / "posthoc"
LOOPBACK_ONLY = ROOT / "tests" / "integration" / "loopback_only"
REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_ADMIN_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "postgresql+psycopg://root@127.0.0.1:5432/postgres",
)
MODEL_TURNS = 3
GOAL_RATIO = 0.9
GOAL_RATIO_SHORT = 0.6
"""The goal at latencies under 3 s a turn (1 s: the worker's CPU per analysis dominates)."""
FLOOR_HEADERS = {
    "x-api-key": "benchmark",
    "anthropic-version": "2023-06-01",
    "content-type": "application/json",
}
GOAL_RSS_BYTES = 1 << 30
ANALYZER = "follow_ups"
WARMUP_RUNS = 8

PREFORK_LAUNCHER = """
import sys
from worker.engine.celery_app import create_celery
from worker.cli.commands import load_catalog, load_settings
settings = load_settings()
load_catalog(settings)
create_celery(settings).worker_main([
    "worker", "--pool=prefork", f"--concurrency={sys.argv[1]}", f"--queues={settings.queue}",
    f"--loglevel={settings.log_level.upper()}",
    "--without-gossip", "--without-mingle", "--without-heartbeat",
])
"""


class Unavailable(RuntimeError):
    """A service the benchmark needs is not running."""


def paced_analyst(body: JSON, *, latency: float) -> FakeReply:
    """The fake's responder: the simulated analyst (3 turns per follow_ups run), `latency`
    seconds before each turn's first event."""
    return replace(simulated_analyst(body), latency=latency)


# -- services ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Services:
    """Where the broker and the database server are (`--redis-url`, `--postgres-admin-url`)."""

    redis_url: str = REDIS_URL
    postgres_admin_urls: tuple[str, ...] = POSTGRES_ADMIN_URLS


@contextmanager
def throwaway_database(services: Services | None = None) -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    services = services or Services()
    for url in services.postgres_admin_urls:
        admin = sa.create_engine(
            url,
            isolation_level="AUTOCOMMIT",
            poolclass=NullPool,
            connect_args={"connect_timeout": 3},
        )
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        except sa.exc.DBAPIError:
            admin.dispose()
            continue
        break
    else:
        raise Unavailable(f"PostgreSQL is not reachable at {services.postgres_admin_urls}")
    name = f"posthoc_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def check_redis(redis_url: str = REDIS_URL) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        raise Unavailable(f"Redis is not reachable at {redis_url}: {error}") from error
    finally:
        client.close()


def delete_queue(queue: str, redis_url: str = REDIS_URL) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(*client.keys(f"{queue}*"), f"_kombu.binding.{queue}")
    finally:
        client.close()


# -- /proc ---------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            tasks = Path(f"/proc/{current}/task").iterdir()
            for task in tasks:
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
        except OSError:
            continue
    return found


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def smaps_kib(pid: int, *fields: str) -> int:
    """The sum of `fields` (e.g. Pss, Private_Dirty) from /proc/<pid>/smaps_rollup."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in fields:
                total += int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# -- one measurement -----------------------------------------------------------------------


@dataclass
class Measurement:
    pool: str
    concurrency: int
    runs: int
    latency: float
    wall_seconds: float
    enqueue_seconds: float
    succeeded: int
    failed: int
    extra_attempts: int
    peak_in_flight: int
    median_run_seconds: float
    peak_rss_kib: int
    peak_sampled_rss_kib: int
    pss_kib: int
    child_private_kib: int
    processes: int
    worker_cpu_seconds: float
    fake_cpu_seconds: float
    floor_cpu_per_analysis: float = 0.0
    """The raw-HTTP floor: CPU seconds of 3 plain POSTs of the worker's bodies, SSE parsed."""

    @property
    def cpu_per_analysis(self) -> float:
        return self.worker_cpu_seconds / self.runs

    @property
    def limit(self) -> float:
        return self.concurrency / (MODEL_TURNS * self.latency)

    @property
    def throughput(self) -> float:
        return self.runs / self.wall_seconds

    @property
    def ratio(self) -> float:
        return self.throughput / self.limit


def worker_environment(
    base_url: str,
    database_url: str,
    queue: str,
    concurrency: int,
    log_level: str,
    redis_url: str,
    model_http_client: str = "aiohttp",
) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108 - only when HOME is unset
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "ANTHROPIC_API_KEY": "benchmark",
        "ANTHROPIC_BASE_URL": base_url,
        "POSTHOC_BROKER_URL": redis_url,
        "POSTHOC_QUEUE": queue,
        "POSTHOC_DATABASE_URL": database_url,
        "POSTHOC_CONCURRENCY": str(concurrency),
        "POSTHOC_LOG_FORMAT": "json",
        "POSTHOC_LOG_LEVEL": log_level,
        "POSTHOC_MODEL_HTTP_CLIENT": model_http_client,
    }
    if LOOPBACK_ONLY.is_dir():  # the workers reach nothing but this machine
        env["PYTHONPATH"] = str(LOOPBACK_ONLY)
    return env


def start_worker(
    pool: str, concurrency: int, env: dict[str, str], log: Path, processes: int
) -> subprocess.Popen[bytes]:
    if pool == "threads":
        command = [str(POSTHOC), "worker", f"--processes={processes}"]
    else:
        command = [sys.executable, "-c", PREFORK_LAUNCHER, str(concurrency)]
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - our own console script or launcher
            command,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def conversation(conversation_id: str) -> Conversation:
    return Conversation.model_validate(
        {
            "conversation_id": conversation_id,
            "tenant_id": "acme",
            "agent_id": "support-bot",
            "channel": "chat",
            "started_at": "2026-11-20T09:00:00Z",
            "ended_at": "2026-11-20T09:04:00Z",
            "outcome": "escalated",
            "turns": [
                {"role": "user", "text": "Our office internet has been down since this morning."},
                {"role": "agent", "text": "I see an outage in your area; a technician is booked."},
                {"role": "user", "text": "We lose money every hour. Please call me back today."},
                {"role": "agent", "text": "I have escalated it and asked a manager to call you."},
            ],
        }
    )


def record(ledger: Ledger, count: int) -> list[str]:
    batch = uuid.uuid4().hex[:8]
    run_ids = []
    for index in range(count):
        ref = ledger.save_conversation(conversation(f"bench-{batch}-{index}"))
        [run] = ledger.record_runs(ref.pk, [RunPlan(ANALYZER, "1.0.0")], trigger="cli")
        run_ids.append(run.id)
    return run_ids


def finished(ledger: Ledger) -> int:
    counts = ledger.counts_by_status()
    return counts["succeeded"] + counts["failed"] + counts["skipped"]


@dataclass
class Bench:
    """One worker under test, the ledger it writes and the app that feeds it."""

    pool: str
    process: subprocess.Popen[bytes]
    ledger: Ledger
    app: Celery
    queue: str
    log: Path

    def send(self, run_ids: Sequence[str]) -> None:
        for run_id in run_ids:
            self.app.send_task(TASK_NAME, args=[run_id], queue=self.queue)

    def check(self, deadline: float) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the {self.pool} worker exited; see {self.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {self.pool} worker did not finish in time; see {self.log}")

    def warm_up(self) -> None:
        """The worker is up and every prefork child has built its service."""
        self.send(record(self.ledger, WARMUP_RUNS))
        deadline = time.monotonic() + 120
        while finished(self.ledger) < WARMUP_RUNS:
            self.check(deadline)
            time.sleep(0.25)


def measure(
    pool: str,
    *,
    concurrency: int,
    runs: int,
    latency: float,
    timeout: float,
    workdir: Path,
    log_level: str,
    services: Services,
    processes: int = 1,
    floor_calls: int = 0,
    model_http_client: str = "aiohttp",
) -> Measurement:
    """One worker (threads or prefork), one fake, one database: N runs through Redis; then,
    with `floor_calls`, the raw-HTTP floor for the bodies that worker sent."""
    queue = f"posthoc.bench.{uuid.uuid4().hex[:10]}"
    responder = functools.partial(paced_analyst, latency=latency)
    with (
        throwaway_database(services) as database_url,
        fake_api_in_child_process(responder) as fake,
    ):
        [fake_process] = multiprocessing.active_children()
        ledger = Ledger.from_url(database_url)
        ledger.migrate()
        app = create_celery(Settings(broker_url=services.redis_url, queue=queue))
        env = worker_environment(
            fake.base_url,
            database_url,
            queue,
            concurrency,
            log_level,
            services.redis_url,
            model_http_client,
        )
        log = workdir / f"worker-{pool}-{latency:g}.log"
        process = start_worker(pool, concurrency, env, log, processes)
        bench = Bench(pool, process, ledger, app, queue, log)
        try:
            bench.warm_up()
            bodies = fake.bodies()
            measured = _timed(bench, runs, fake_process.pid or 0, timeout, concurrency, latency)
        finally:
            stop_worker(bench.process)
            app.close()
            ledger.dispose()
            delete_queue(queue, services.redis_url)
    if floor_calls:
        measured.floor_cpu_per_analysis = raw_http_floor(bodies, floor_calls)
    return measured


def raw_http_floor(bodies: Sequence[JSON], calls: int) -> float:
    """CPU seconds (this process) per analysis of `MODEL_TURNS` plain HTTP calls: each of
    `calls` POSTs serialises one of the worker's bodies, sends it on a keep-alive connection to
    a fake with no latency (its own process), reads the SSE lines and parses each event's JSON."""
    if not bodies:
        raise RuntimeError("the worker sent no model request during its warm-up")
    responder = functools.partial(paced_analyst, latency=0.0)
    with fake_api_in_child_process(responder) as fake, httpx2.Client(timeout=60) as client:
        url = f"{fake.base_url.rstrip('/')}/v1/messages"
        _post_and_parse(client, url, bodies[0])  # connect outside the measurement
        started = time.process_time()
        for index in range(calls):
            _post_and_parse(client, url, bodies[index % len(bodies)])
        spent = time.process_time() - started
        _check_floor_answers(fake, calls + 1)
    return spent / calls * MODEL_TURNS


def _post_and_parse(client: httpx2.Client, url: str, body: JSON) -> None:
    content = json.dumps(body).encode()
    with client.stream("POST", url, content=content, headers=FLOOR_HEADERS) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data:"):
                json.loads(line[5:])


def _check_floor_answers(fake: RemoteFakeAPI, expected: int) -> None:
    if len(fake.body_digests()) != expected:
        raise RuntimeError("the floor's fake did not answer every call")


def _timed(
    bench: Bench, runs: int, fake_pid: int, timeout: float, concurrency: int, latency: float
) -> Measurement:
    run_ids = record(bench.ledger, runs)
    worker_pid = bench.process.pid
    worker_cpu_before = sum(cpu_seconds(p) for p in process_tree(worker_pid))
    fake_cpu_before = cpu_seconds(fake_pid)

    started = datetime.now(UTC)
    bench.send(run_ids)
    enqueued = (datetime.now(UTC) - started).total_seconds()
    peak_in_flight = peak_rss = 0
    deadline = time.monotonic() + timeout
    while finished(bench.ledger) < WARMUP_RUNS + runs:
        bench.check(deadline)
        peak_in_flight = max(peak_in_flight, bench.ledger.counts_by_status()["running"])
        peak_rss = max(peak_rss, sum(status_kib(p, "VmRSS") for p in process_tree(worker_pid)))
        time.sleep(0.25)

    tree = process_tree(worker_pid)
    children = [smaps_kib(p, "Private_Clean", "Private_Dirty") for p in tree if p != worker_pid]
    wanted = set(run_ids)
    mine = [r for r in bench.ledger.list_runs(limit=runs + WARMUP_RUNS + 10) if r.id in wanted]
    last = max(r.finished_at for r in mine if r.finished_at is not None)
    durations = [
        (r.finished_at - r.started_at).total_seconds()
        for r in mine
        if r.finished_at is not None and r.started_at is not None
    ]
    return Measurement(
        pool=bench.pool,
        concurrency=concurrency,
        runs=runs,
        latency=latency,
        wall_seconds=(last - started).total_seconds(),
        enqueue_seconds=enqueued,
        succeeded=sum(r.status == "succeeded" for r in mine),
        failed=sum(r.status == "failed" for r in mine),
        extra_attempts=sum(r.attempts - 1 for r in mine),
        peak_in_flight=peak_in_flight,
        median_run_seconds=statistics.median(durations) if durations else 0.0,
        peak_rss_kib=sum(status_kib(p, "VmHWM") for p in tree),
        peak_sampled_rss_kib=peak_rss,
        pss_kib=sum(smaps_kib(p, "Pss") for p in tree),
        child_private_kib=int(statistics.median(children)) if children else 0,
        processes=len(tree),
        worker_cpu_seconds=sum(cpu_seconds(p) for p in tree) - worker_cpu_before,
        fake_cpu_seconds=cpu_seconds(fake_pid) - fake_cpu_before,
    )


# -- report --------------------------------------------------------------------------------


def goal_ratio(latency: float) -> float:
    return GOAL_RATIO if latency >= 3 else GOAL_RATIO_SHORT


def describe(m: Measurement) -> str:
    mib = 1024
    lines = [
        f"[{m.pool}] concurrency {m.concurrency}, {m.runs} runs, {MODEL_TURNS} turns x "
        f"{m.latency:g} s per run, {m.processes} process(es) at the end",
        f"  wall {m.wall_seconds:.2f} s (first enqueue to last completion; enqueueing took "
        f"{m.enqueue_seconds:.2f} s); succeeded "
        f"{m.succeeded}, failed {m.failed}, extra attempts {m.extra_attempts}",
        f"  throughput {m.throughput:.2f} runs/s; limit {m.concurrency} / "
        f"{MODEL_TURNS * m.latency:g} s = {m.limit:.2f} runs/s; ratio {m.ratio:.3f}",
        f"  peak in flight (ledger, sampled every 0.25 s) {m.peak_in_flight}; median run "
        f"{m.median_run_seconds:.2f} s (model time alone {MODEL_TURNS * m.latency:g} s)",
        f"  peak RSS: sum of VmHWM over {m.processes} process(es) "
        f"{m.peak_rss_kib / mib:.1f} MiB; peak sampled total VmRSS "
        f"{m.peak_sampled_rss_kib / mib:.1f} MiB; at the end, PSS (shared pages split "
        f"between processes) {m.pss_kib / mib:.1f} MiB",
        f"  CPU during the measured part: worker {m.worker_cpu_seconds:.1f} s "
        f"({m.worker_cpu_seconds / m.wall_seconds:.2f} cores), fake model "
        f"{m.fake_cpu_seconds:.1f} s ({m.fake_cpu_seconds / m.wall_seconds:.2f} cores); "
        f"{os.cpu_count()} cores here",
    ]
    if m.floor_cpu_per_analysis:
        lines.append(
            f"  CPU per analysis: worker {m.cpu_per_analysis * 1000:.1f} ms; raw-HTTP floor "
            f"{m.floor_cpu_per_analysis * 1000:.1f} ms ({MODEL_TURNS} POSTs, SSE parsed); "
            f"worker / floor {m.cpu_per_analysis / m.floor_cpu_per_analysis:.2f}x"
        )
    return "\n".join(lines)


def summary(m: Measurement) -> str:
    """One line per latency: the ratio and, beside it, the CPU per analysis and the floor."""
    met = m.ratio >= goal_ratio(m.latency) and m.peak_rss_kib * 1024 < GOAL_RSS_BYTES
    floor = (
        f"floor {m.floor_cpu_per_analysis * 1000:.1f} ms "
        f"({m.cpu_per_analysis / m.floor_cpu_per_analysis:.2f}x)"
        if m.floor_cpu_per_analysis
        else "floor not measured"
    )
    return (
        f"{m.latency:>5g} s/turn: ratio {m.ratio:.3f} (goal >= {goal_ratio(m.latency)}) | "
        f"worker CPU/analysis {m.cpu_per_analysis * 1000:.1f} ms | {floor} | "
        f"peak RSS {m.peak_rss_kib / 1024:.0f} MiB -> {verdict(met)}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="a tiny run, for CI")
    parser.add_argument("--runs", type=int, default=None, help="analyses per latency (3000)")
    parser.add_argument("--concurrency", type=int, default=None, help="in flight (500)")
    parser.add_argument(
        "--latencies", default=None, help="seconds per turn, comma-separated (10,3,1)"
    )
    parser.add_argument("--latency", type=float, default=None, help="one latency only")
    parser.add_argument(
        "--processes", type=int, default=None, help="posthoc worker --processes (cores here)"
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help=f"the broker ({REDIS_URL})")
    parser.add_argument(
        "--postgres-admin-url",
        action="append",
        default=None,
        help="a PostgreSQL URL allowed to create databases (each latency gets a throwaway one);"
        " repeat to try several",
    )
    parser.add_argument(
        "--floor-calls", type=int, default=None, help="raw-HTTP floor calls per latency (600)"
    )
    parser.add_argument("--prefork-processes", type=int, default=None, help="baseline (8)")
    parser.add_argument("--baseline-runs", type=int, default=None, help="baseline runs (48)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the prefork baseline")
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' logs")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="the workers' POSTHOC_LOG_LEVEL (default: info, as in production)",
    )
    parser.add_argument(
        "--model-http-client",
        choices=["aiohttp", "httpx"],
        default="aiohttp",
        help="the workers' POSTHOC_MODEL_HTTP_CLIENT (default: aiohttp, as in production)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    runs = args.runs or (20 if args.smoke else 3000)
    concurrency = args.concurrency or (10 if args.smoke else 500)
    if args.latency is not None:
        latencies = [args.latency]
    else:
        latencies = [
            float(v) for v in (args.latencies or ("0.2" if args.smoke else "10,3,1")).split(",")
        ]
    processes = args.processes or (2 if args.smoke else len(os.sched_getaffinity(0)))
    floor_calls = args.floor_calls or (30 if args.smoke else 600)
    prefork_processes = args.prefork_processes or (2 if args.smoke else 8)
    # The baseline holds one analysis per process: 48 runs are six waves of its 8 processes.
    baseline_runs = args.baseline_runs or (8 if args.smoke else 48)
    services = Services(args.redis_url, tuple(args.postgres_admin_url or POSTGRES_ADMIN_URLS))

    print(
        f"throughput benchmark{' (smoke)' if args.smoke else ''}: {runs} runs of {ANALYZER} "
        f"per latency, {MODEL_TURNS} model turns x {', '.join(f'{v:g}' for v in latencies)} s, "
        f"{concurrency} in flight on `posthoc worker --processes {processes}`, Redis broker, "
        f"PostgreSQL ledger, fake Messages API in its own process, model HTTP client "
        f"{args.model_http_client}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="posthoc-bench-"))
    results: list[Measurement] = []
    try:
        check_redis(services.redis_url)
        for latency in latencies:
            threads = measure(
                "threads",
                concurrency=concurrency,
                runs=runs,
                latency=latency,
                timeout=300 + 3 * runs * MODEL_TURNS * latency / concurrency,
                workdir=workdir,
                log_level=args.log_level,
                model_http_client=args.model_http_client,
                services=services,
                processes=processes,
                floor_calls=floor_calls,
            )
            print(describe(threads), flush=True)
            results.append(threads)
        prefork = None
        if not args.no_baseline:
            prefork = measure(
                "prefork",
                concurrency=prefork_processes,
                runs=baseline_runs,
                latency=latencies[0],
                timeout=300 + 3 * baseline_runs * MODEL_TURNS * latencies[0] / prefork_processes,
                workdir=workdir,
                log_level=args.log_level,
                model_http_client=args.model_http_client,
                services=services,
            )
            print(describe(prefork), flush=True)
    except Unavailable as error:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"cannot run: {error}")
        return 1 if os.environ.get("CI") == "true" else 0
    except BaseException:
        print(f"worker logs kept in {workdir}")
        raise
    if args.keep_logs:
        print(f"worker logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"summary ({concurrency} in flight, --processes {processes}; RSS goal < 1024 MiB):")
    for measured in results:
        print("  " + summary(measured))
    if prefork is not None:
        parent = prefork.pss_kib - prefork.child_private_kib * (prefork.processes - 1)
        needed = (parent + prefork.child_private_kib * concurrency) / (1024 * 1024)
        print(
            f"prefork baseline: ratio {prefork.ratio:.3f} at {prefork_processes} in flight, "
            f"peak RSS {prefork.peak_rss_kib / 1024:.0f} MiB over {prefork.processes} "
            f"processes; each child holds ~{prefork.child_private_kib / 1024:.0f} MiB of its "
            f"own (private), so {concurrency} in flight would need ~{needed:.1f} GiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
