"""Fixtures for fleet tests: real `posthoc worker` processes on a real broker (Redis or RabbitMQ)
and a fresh PostgreSQL ledger, analysing against the fake Messages API served in this process.

Every test gets its own database, its own queue name (so test runs sharing the brokers never
see each other's messages) and its own fake. Workers run with `loopback_only/` on their
PYTHONPATH, which refuses any connection that would leave the machine, and with an environment
built from scratch (no proxies, keys or settings leak in from the shell). They are SIGKILLed in
teardown, whatever the test did. A service that is not running skips the test with the reason,
except in CI (`CI=true`), where that is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import pytest
import sqlalchemy as sa
from celery import Celery

from analyzers.fakes import FakeMessagesAPI, FakeReply, serve_fake_messages_api, simulated_analyst
from schemas import Conversation
from tests.worker.ledger.conftest import _admin_engine
from worker.engine.celery_app import TASK_NAME, create_celery
from worker.ledger import AttemptRecord, Ledger, RunPlan
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
POSTHOC = ROOT / ".venv" / "bin" / "posthoc"
PYTHON = ROOT / ".venv" / "bin" / "python"
LOOPBACK_ONLY = Path(__file__).resolve().parent / "loopback_only"
REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
ANALYZER = "follow_ups"
MODEL_TURNS = 3
"""Requests the simulated analyst needs for one follow_ups run: read, record, close."""
HOST = socket.gethostname()


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail in CI, because a service the test needs is not there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the integration services must be there)")
    pytest.skip(reason)


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[sa.Engine]:
    admin, problems = _admin_engine()
    if admin is None:
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432: " + "; ".join(problems))
    try:
        yield admin
    finally:
        admin.dispose()


@pytest.fixture
def database_url(postgres_admin: sa.Engine) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards (workers are gone by then:
    the `fleet` fixture depends on this one, so it is torn down first)."""
    name = f"posthoc_fleet_{uuid.uuid4().hex[:12]}"
    with postgres_admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with postgres_admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    ledger = Ledger.from_url(database_url)
    ledger.migrate()
    try:
        yield ledger
    finally:
        ledger.dispose()


# -- brokers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broker:
    """A broker and the queue name this test uses on it."""

    kind: str
    url: str
    queue: str


def _check_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        unavailable(f"Redis is not reachable at {REDIS_URL}: {error}")
    finally:
        client.close()


def _check_rabbitmq() -> None:
    from kombu import Connection

    with Connection(AMQP_URL, connect_timeout=3) as connection:
        try:
            connection.ensure_connection(max_retries=1)
        except Exception as error:
            unavailable(f"RabbitMQ is not reachable at 127.0.0.1:5672: {error!r}")


def _delete_queue(broker: Broker) -> None:
    if broker.kind == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            # A killed worker's reserved messages stay in kombu's unacked set, and a later
            # restore sweep would put them back on the deleted queue: drop them too.
            for tag, payload in client.hgetall("unacked").items():
                try:
                    _, exchange, routing_key = json.loads(payload)
                except (ValueError, TypeError):
                    continue
                if broker.queue in (exchange, routing_key):
                    client.hdel("unacked", tag)
                    client.zrem("unacked_index", tag)
            keys = [*client.keys(f"{broker.queue}*"), f"_kombu.binding.{broker.queue}"]
            client.delete(*keys)
        finally:
            client.close()
        return
    from kombu import Connection

    with Connection(AMQP_URL, connect_timeout=3) as connection:
        channel: Any = connection.default_channel
        channel.queue_delete(broker.queue)
        channel.exchange_delete(broker.queue)


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """Redis or RabbitMQ, with a queue name no other test (or test run) uses."""
    kind: str = request.param
    if kind == "redis":
        _check_redis()
        url = REDIS_URL
    else:
        _check_rabbitmq()
        url = AMQP_URL
    found = Broker(kind, url, f"posthoc.test.{uuid.uuid4().hex[:10]}")
    try:
        yield found
    finally:
        _delete_queue(found)


@pytest.fixture
def sender(broker: Broker) -> Iterator[Celery]:
    """A Celery app on the test's broker and queue, for sending run ids."""
    app = create_celery(Settings(broker_url=broker.url, queue=broker.queue))
    try:
        yield app
    finally:
        app.close()


def send(app: Celery, run_ids: list[str]) -> None:
    for run_id in run_ids:
        app.send_task(TASK_NAME, args=[run_id], queue=app.conf.task_default_queue)


# -- the fake model ------------------------------------------------------------------------

_CONVERSATION_ID = re.compile(r"fleet-[0-9a-f]{8}-\d+")


@dataclass
class PacedAnalyst:
    """The simulated analyst with a fixed latency per model turn, counting the requests it
    answers by (conversation id, turn index)."""

    latency: float
    calls: Counter[tuple[str, int]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, body: dict[str, Any]) -> FakeReply:
        found = _CONVERSATION_ID.search(json.dumps(body.get("system")))
        turn = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
        with self._lock:
            self.calls[(found.group(0) if found else "?", turn)] += 1
        return replace(simulated_analyst(body), latency=self.latency)

    def turns_seen(self, conversation_id: str) -> list[int]:
        """How many requests the fake answered for each turn index of this conversation."""
        with self._lock:
            return [self.calls[(conversation_id, turn)] for turn in range(MODEL_TURNS)]


@dataclass
class Fake:
    base_url: str
    analyst: PacedAnalyst


@pytest.fixture
def fake_model() -> Iterator[Fake]:
    """The fake Messages API, 1 s per model turn (a test may set `analyst.latency`)."""
    analyst = PacedAnalyst(latency=1.0)
    with serve_fake_messages_api(FakeMessagesAPI(responder=analyst)) as base_url:
        yield Fake(base_url, analyst)


# -- workers -------------------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def lease_prefix(self) -> str:
        """How this process's claims start in the ledger (`host:pid:run_id`)."""
        return f"{HOST}:{self.pid}:"

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The structured log lines this worker wrote (optionally only events called `name`)."""
        found = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if name is None or event.get("event") == name:
                    found.append(event)
        return found

    def tail(self, lines: int = 25) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return f"--- {self.name} (pid {self.pid}) ---\n" + "\n".join(text[-lines:])

    def kill(self) -> None:
        """SIGKILL the worker's whole process group and reap it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it died on its own meanwhile
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@dataclass
class Fleet:
    """Starts `posthoc worker` processes for one test; kills them all in teardown."""

    tmp_path: Path
    broker: Broker
    database_url: str
    fake: Fake
    workers: list[Worker] = field(default_factory=list)

    def environment(self, concurrency: int, **settings: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.tmp_path),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(LOOPBACK_ONLY),
            "PYTHONUNBUFFERED": "1",
            "ANTHROPIC_API_KEY": "fleet-test-key",
            "ANTHROPIC_BASE_URL": self.fake.base_url,
            "POSTHOC_BROKER_URL": self.broker.url,
            "POSTHOC_QUEUE": self.broker.queue,
            "POSTHOC_DATABASE_URL": self.database_url,
            "POSTHOC_CONCURRENCY": str(concurrency),
            "POSTHOC_LEASE_SECONDS": "10",
            "POSTHOC_HEARTBEAT_SECONDS": "1",
            "POSTHOC_SWEEP_INTERVAL_SECONDS": "1",
            "POSTHOC_STALE_QUEUED_SECONDS": "3",
            "POSTHOC_RETRY_BASE_SECONDS": "1",
            "POSTHOC_LOG_FORMAT": "json",
            "POSTHOC_LOG_LEVEL": "info",
            # One process per worker: these tests are about one process's liveness, exit
            # statuses and leases (`test_worker_supervisor.py` runs `--processes 2`).
            "POSTHOC_PROCESSES": "1",
        }
        env.update({f"POSTHOC_{name.upper()}": value for name, value in settings.items()})
        return env

    def start(self, name: str, concurrency: int = 4, **settings: str) -> Worker:
        """Start `posthoc worker` (its own process group, output to `<name>.log`)."""
        log = self.tmp_path / f"worker-{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - our own console script, fixed arguments
                [str(POSTHOC), "worker"],
                env=self.environment(concurrency, **settings),
                cwd=self.tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(name, process, log)
        self.workers.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(worker.tail() for worker in self.workers)

    def kill_all(self) -> None:
        for worker in self.workers:
            worker.kill()


@pytest.fixture
def fleet(tmp_path: Path, broker: Broker, database_url: str, fake_model: Fake) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path, broker, database_url, fake_model)
    try:
        yield fleet
    finally:
        fleet.kill_all()


# -- runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    run_id: str
    conversation_id: str


def fleet_conversation(conversation_id: str) -> Conversation:
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


def record_runs(ledger: Ledger, count: int) -> list[Submitted]:
    """`count` conversations, each with one queued follow_ups run (not sent yet)."""
    batch = uuid.uuid4().hex[:8]
    submitted = []
    for index in range(count):
        conversation_id = f"fleet-{batch}-{index}"
        ref = ledger.save_conversation(fleet_conversation(conversation_id))
        plan = RunPlan(ANALYZER, "1.0.0", max_attempts=5)
        [run] = ledger.record_runs(ref.pk, [plan], trigger="cli")
        submitted.append(Submitted(run.id, conversation_id))
    return submitted


def wait_for(
    condition: Callable[[], bool], *, timeout: float, what: str, fleet: Fleet | None = None
) -> None:
    """Poll `condition` until it holds; fail with `what` (and the workers' logs) at the
    deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = f"\n{fleet.logs()}" if fleet is not None else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{logs}")
        time.sleep(0.2)


def outcomes(attempts: list[AttemptRecord]) -> list[str | None]:
    return [attempt.outcome for attempt in attempts]
