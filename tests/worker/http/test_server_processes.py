"""`posthoc serve --workers N` runs N processes each listening with its own SO_REUSEPORT socket:
new connections are spread across them (with one shared socket, one process took nearly all of
a burst of keep-alive clients), a child that dies is replaced, and SIGTERM stops them all."""

from __future__ import annotations

import collections
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def node() -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.worker.http.pid_server", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process, int(process.stdout.readline())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        assert process.stdout is not None
        process.stdout.close()


def pids_of_new_connections(port: int, count: int) -> list[int]:
    """Open `count` keep-alive connections at once, then ask each which process holds it."""
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(count)]
    try:
        for connection in connections:
            connection.connect()
        pids = []
        for connection in connections:
            connection.request("GET", "/")
            pids.append(int(connection.getresponse().read()))
        return pids
    finally:
        for connection in connections:
            connection.close()


def wait_for(condition: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def serving_pids(port: int) -> set[int]:
    try:
        return set(pids_of_new_connections(port, 16))
    except (OSError, http.client.HTTPException):  # a child just killed
        return set()


def test_connections_are_spread_over_the_processes(node: tuple[subprocess.Popen[str], int]) -> None:
    _, port = node
    wait_for(lambda: len(serving_pids(port)) == 2)
    counts = collections.Counter(pids_of_new_connections(port, 64))
    assert len(counts) == 2
    # The kernel hashes each connection to a socket: with 64 connections the chance that one
    # process gets more than 56 is about 1 in 10^9 (a shared socket gave one process them all).
    assert max(counts.values()) <= 56, counts


def test_a_dead_child_is_replaced_and_sigterm_stops_them_all(
    node: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = node
    wait_for(lambda: len(serving_pids(port)) == 2)
    first = serving_pids(port)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: (now := serving_pids(port)) and victim not in now and len(now) == 2)
    children = serving_pids(port)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
