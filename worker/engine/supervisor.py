"""`posthoc worker --processes N`: N worker processes on one node, supervised.

One worker process is one asyncio loop, so one core at most; a node with more cores runs one
child per core. Each child is a plain `posthoc worker --processes 1` with its share of the
node's concurrency, its own broker connection, ledger pool and model client. The ledger
guarantees are per run, not per process, so nothing changes for them: every child claims runs
under its own lease owner (`host:pid:run`).

What the supervisor does, and nothing more:
- starts the children, and replaces one that dies (killed, crashed, or exited 75 because it
  stopped consuming) after a back-off that grows while children keep dying young;
- on SIGTERM or SIGINT sends each child SIGTERM (Celery's warm shutdown: stop consuming, finish
  the analyses in flight) and waits for all of them; a second signal sends SIGQUIT (cold: the
  runs in flight are taken over by other workers when their leases expire);
- exits 0 after a clean drain, 1 if a child failed to drain cleanly, 2 (and stops the others)
  when a child exits 2, a usage or configuration error that a restart would only repeat;
- serves the node's health: `GET /healthz` on the configured health port is 200 while every
  child consumes (each child's watchdog touches its own heartbeat file, in a directory of the
  supervisor's, while it consumes), with one entry per child; the configured heartbeat file is
  touched while every child consumes; `GET /metrics` on the same port is every child's
  Prometheus metrics, summed (prometheus_client's multiprocess mode: the children write to
  one directory, `PROMETHEUS_MULTIPROC_DIR`, a private one unless configured).

Children are identified by their index (0..N-1, kept across replacements): it is in their
environment as `POSTHOC_WORKER_INDEX` (`Settings.worker_index`) and in the health answer with
the current pid. A child asks the kernel for SIGTERM should the supervisor die (`die_with_parent`).
Run the supervisor as the main process of its unit (systemd `KillMode=mixed`, or a container's
entry point): it forwards the stop signal itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from worker.engine.liveness import HealthHandler, serve_handler
from worker.observability import metrics
from worker.restarts import restart_after

log = structlog.get_logger("posthoc.worker.supervisor")

EXIT_USAGE = 2
"""A child exiting with this status has a configuration problem: restarting cannot help."""
POLL_SECONDS = 0.2
BEAT_STALE_SECONDS = 10.0
"""A child whose heartbeat file is older than this is not consuming (its watchdog beats 1/s)."""

Command = Callable[[int, int], Sequence[str]]
"""(index, concurrency) -> the child's command line."""


def concurrency_shares(total: int, processes: int) -> list[int]:
    """`total` analyses in flight split over `processes` children as evenly as possible."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes!r}")
    if total < processes:
        raise ValueError(
            f"concurrency {total} is less than processes {processes}: every process needs at "
            "least one analysis in flight"
        )
    base, extra = divmod(total, processes)
    return [base + (1 if index < extra else 0) for index in range(processes)]


def metrics_directory(configured: Path | None) -> Path:
    """The children's multiprocess metrics directory: the configured one, emptied of an earlier
    run's files (prometheus_client's rule), else a new private one."""
    if configured is None:
        return Path(tempfile.mkdtemp(prefix="posthoc-metrics-"))
    configured.mkdir(parents=True, exist_ok=True)
    for stale in configured.glob("*.db"):
        stale.unlink(missing_ok=True)
    return configured


def default_processes() -> int:
    """The cores this process may run on (a container's CPU set, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def die_with_parent() -> None:
    """Linux: have the kernel send this process SIGTERM when its parent (the supervisor) dies,
    so a SIGKILLed supervisor leaves no children consuming on their own."""
    try:
        import ctypes  # noqa: PLC0415 - only children of a supervisor need it

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request: do what it would have done
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Child:
    """One slot of the node: its index stays, its process is replaced."""

    index: int
    concurrency: int
    beat_file: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    quick_deaths: int = 0
    restart_at: float | None = None
    exit_status: int | None = None
    signalled: int = 0
    """Stop signals sent to the current process (1: SIGTERM, 2: and SIGQUIT)."""

    def consuming(self, now: float) -> bool:
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            beat = self.beat_file.stat().st_mtime
        except OSError:
            return False
        return now - beat <= BEAT_STALE_SECONDS

    def describe(self, now: float) -> dict[str, Any]:
        alive = self.process is not None and self.process.poll() is None
        try:
            beat_age: float | None = round(now - self.beat_file.stat().st_mtime, 3)
        except OSError:
            beat_age = None
        return {
            "index": self.index,
            "pid": self.process.pid if alive and self.process is not None else None,
            "consuming": self.consuming(now),
            "beat_age_seconds": beat_age,
            "restarts": self.restarts,
            "concurrency": self.concurrency,
        }


class Supervisor:
    """Runs N children until told to stop; see the module docstring."""

    def __init__(
        self,
        command: Command,
        shares: Sequence[int],
        *,
        environment: dict[str, str],
        heartbeat_file: Path | None = None,
        beat_dir: Path | None = None,
        metrics_dir: Path | None = None,
    ) -> None:
        self.command = command
        self.environment = environment
        self.heartbeat_file = heartbeat_file
        self.metrics_dir = metrics_dir
        """Where the children write their metrics (None: they keep them to themselves)."""
        self._beat_dir = Path(beat_dir or tempfile.mkdtemp(prefix="posthoc-workers-"))
        self.children = [
            Child(index, share, self._beat_dir / f"worker-{index}.beat")
            for index, share in enumerate(shares)
        ]
        self._lock = threading.Lock()
        self._signals = 0
        self._fatal: int | None = None

    # -- signals -----------------------------------------------------------------------------

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        # Only count here (a handler runs between any two bytecodes of the main thread); the
        # loop forwards, so a child being started at this moment is not missed.
        self._signals += 1

    def _forward(self) -> None:
        """Send each live child the signal it has not had yet: SIGTERM, then SIGQUIT."""
        wanted = min(self._signals + (self._fatal is not None), 2)
        for child in self.children:
            if child.process is None or child.process.poll() is not None:
                continue
            while child.signalled < wanted:
                child.signalled += 1
                forward = signal.SIGTERM if child.signalled == 1 else signal.SIGQUIT
                try:
                    child.process.send_signal(forward)
                except ProcessLookupError:
                    break

    @property
    def stopping(self) -> bool:
        return self._signals > 0 or self._fatal is not None

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        """Start the children and supervise them until they have all exited; the exit status."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for child in self.children:
                self._start(child)
            log.info("supervisor.started", processes=len(self.children), pid=os.getpid())
            while True:
                self._reap_and_replace(time.monotonic())
                self._forward()
                if self.stopping and all(
                    child.process is None or child.process.poll() is not None
                    for child in self.children
                ):
                    break
                self._beat()
                time.sleep(POLL_SECONDS)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._exit_status()

    def _start(self, child: Child) -> None:
        env = {
            **self.environment,
            "POSTHOC_WORKER_INDEX": str(child.index),
            "POSTHOC_HEARTBEAT_FILE": str(child.beat_file),
            "POSTHOC_PROCESSES": "1",
        }
        env.pop("POSTHOC_HEALTH_PORT", None)  # the node's health is the supervisor's port
        if self.metrics_dir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        child.beat_file.unlink(missing_ok=True)
        with self._lock:
            child.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                list(self.command(child.index, child.concurrency)),
                env=env,
                stdin=subprocess.DEVNULL,
            )
            child.started_at = time.monotonic()
            child.restart_at = None
            child.signalled = 0
        log.info("worker.child_started", index=child.index, pid=child.process.pid)

    def _reap_and_replace(self, now: float) -> None:
        for child in self.children:
            process = child.process
            if process is not None and process.poll() is not None:
                status = process.returncode
                child.exit_status = status
                child.process = None
                # Its live gauges (in flight, free slots) must stop counting; counters stay.
                metrics.process_exited(process.pid, self.metrics_dir)
                if self.stopping:
                    log.info("worker.child_exited", index=child.index, exit_status=status)
                    continue
                if status == EXIT_USAGE:
                    log.error("worker.child_config_error", index=child.index, exit_status=status)
                    self._fatal = EXIT_USAGE
                    continue
                lived = now - child.started_at
                child.quick_deaths, delay = restart_after(child.quick_deaths, lived)
                child.restart_at = now + delay
                log.warning(
                    "worker.child_died",
                    index=child.index,
                    pid=process.pid,
                    exit_status=status,
                    lived_s=round(lived, 1),
                    restart_in_s=round(child.restart_at - now, 1),
                )
            if (
                child.process is None
                and child.restart_at is not None
                and now >= child.restart_at
                and not self.stopping
            ):
                child.restarts += 1
                self._start(child)

    def _exit_status(self) -> int:
        if self._fatal is not None:
            return self._fatal
        drained = (0, -signal.SIGTERM, -signal.SIGINT)
        clean = all(child.exit_status in drained for child in self.children)
        return 0 if clean else 1

    # -- health --------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """What the node's health port answers."""
        now = time.time()
        with self._lock:
            children = [child.describe(now) for child in self.children]
        return {
            "consuming": bool(children) and all(child["consuming"] for child in children),
            "processes": len(children),
            "stopping": self.stopping,
            "children": children,
        }

    def _beat(self) -> None:
        if self.heartbeat_file is None or not self.report()["consuming"]:
            return
        try:
            self.heartbeat_file.touch()
        except OSError as error:
            log.warning(
                "heartbeat_file.unwritable", path=str(self.heartbeat_file), error=str(error)
            )


class _NodeHealthHandler(HealthHandler):
    supervisor: Supervisor

    def health(self) -> tuple[bool, dict[str, Any]]:
        report = self.supervisor.report()
        return bool(report["consuming"]), report


def serve_node_health(supervisor: Supervisor, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the node's `GET /healthz` and `GET /metrics` (every child's, summed) from a
    daemon thread; `shutdown()` stops it."""
    handler = type(
        "NodeHealthHandler",
        (_NodeHealthHandler,),
        {"supervisor": supervisor, "metrics_dir": supervisor.metrics_dir},
    )
    return serve_handler(handler, host, port)
