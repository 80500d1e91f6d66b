"""`posthoc serve --workers N`: N server processes, each listening on the port with its own socket.

uvicorn's own `--workers` shares one listening socket between its processes, and whichever
process wakes first accepts every connection waiting (asyncio accepts a whole backlog at once).
Webhook senders and load balancers keep their connections alive, so under load one process
ended up with all of them and the others idled: measured with 32 keep-alive clients on 2
processes, 85-100% of the requests went to one. Here every process opens its own socket on the
same address with `SO_REUSEPORT`, and the kernel spreads new connections across them.

The parent binds the address too, without listening (a bound socket that does not listen gets
no connections): it holds the port while children are replaced, and it resolves port 0. It
supervises, and nothing more:
- a child that dies is started again, after a back-off that grows while children keep dying
  young (connections still waiting in a dead child's queue are reset; senders retry);
- SIGTERM or SIGINT is forwarded to every child (uvicorn's graceful shutdown: stop accepting,
  finish the requests in flight, write the deliveries queued for the ledger), and the parent
  exits once all have; a second signal kills them.

Where the platform has no `SO_REUSEPORT`, `serve` falls back to uvicorn's shared socket.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from types import FrameType

import structlog

from worker.restarts import restart_after

log = structlog.get_logger("posthoc.http.processes")

POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 30.0
"""After SIGTERM, how long the children get to finish before they are killed."""

ServeChild = Callable[[socket.socket], None]
"""Runs one server process's loop on the given listening socket (in the child)."""


def reuse_port_available() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with `SO_REUSEPORT`, not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _child_main(serve: ServeChild, host: str, port: int, backlog: int) -> None:
    sock = port_socket(host, port)
    sock.listen(backlog)
    serve(sock)


@dataclass
class _Slot:
    index: int
    process: SpawnProcess | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None
    exit_codes: list[int | None] = field(default_factory=list)


class ServerProcesses:
    """N children serving one address; see the module docstring.

    :param serve: the child's server loop; it must be importable (children are spawned).
    :param host: the interface.
    :param port: the port (0: one the kernel picks; `port` has it once bound).
    """

    def __init__(
        self, serve: ServeChild, host: str, port: int, processes: int, backlog: int = 2048
    ) -> None:
        self._serve = serve
        self._host = host
        self._backlog = backlog
        self._holder = port_socket(host, port)
        self.port: int = self._holder.getsockname()[1]
        self._slots = [_Slot(index) for index in range(processes)]
        self._signals = 0
        self._context = multiprocessing.get_context("spawn")

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self._signals += 1  # the loop forwards it

    def run(self, *, ready: Callable[[int], None] = lambda _port: None) -> int:
        """Serve until told to stop; 0 once every child has exited after a stop signal."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for slot in self._slots:
                self._start(slot)
            ready(self.port)
            forwarded = 0
            stop_deadline: float | None = None
            while True:
                now = time.monotonic()
                if self._signals > forwarded:
                    forwarded = self._signals
                    stop_deadline = stop_deadline or now + STOP_GRACE_SECONDS
                    self._signal_children(signal.SIGTERM if forwarded == 1 else signal.SIGKILL)
                if stop_deadline is not None and now > stop_deadline:
                    self._signal_children(signal.SIGKILL)
                self._reap_and_replace(now, stopping=self._signals > 0)
                if self._signals and all(slot.process is None for slot in self._slots):
                    return 0
                time.sleep(POLL_SECONDS)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._holder.close()

    def _start(self, slot: _Slot) -> None:
        process = self._context.Process(
            target=_child_main,
            args=(self._serve, self._host, self.port, self._backlog),
            name=f"posthoc-serve-{slot.index}",
            daemon=False,
        )
        process.start()
        slot.process = process
        slot.started_at = time.monotonic()
        slot.restart_at = None
        log.info("serve.child_started", index=slot.index, pid=process.pid)

    def _signal_children(self, signum: int) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signum)

    def _reap_and_replace(self, now: float, *, stopping: bool) -> None:
        for slot in self._slots:
            process = slot.process
            if process is not None and not process.is_alive():
                process.join()
                slot.exit_codes.append(process.exitcode)
                slot.process = None
                if stopping:
                    continue
                lived = now - slot.started_at
                slot.quick_deaths, delay = restart_after(slot.quick_deaths, lived)
                slot.restart_at = now + delay
                log.warning(
                    "serve.child_died",
                    index=slot.index,
                    pid=process.pid,
                    exit_code=process.exitcode,
                    restart_in_s=round(slot.restart_at - now, 1),
                )
            if (
                slot.process is None
                and slot.restart_at is not None
                and now >= slot.restart_at
                and not stopping
            ):
                self._start(slot)

    def pids(self) -> list[int]:
        """The live children's process ids."""
        return [
            slot.process.pid
            for slot in self._slots
            if slot.process is not None and slot.process.pid is not None
        ]
