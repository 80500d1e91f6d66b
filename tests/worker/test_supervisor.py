"""The node supervisor of `posthoc worker --processes N`, with tiny stand-in children (a few
lines of Python that beat their heartbeat file and exit 0 on SIGTERM): shares of the
concurrency, a dead child replaced under the same index, a stop that drains every child, a
child's configuration error stopping the node with 2, and the node's health answer."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.engine.supervisor import Supervisor, concurrency_shares, serve_node_health

CHILD = """
import os, pathlib, signal, sys, time
beat = pathlib.Path(os.environ["POSTHOC_HEARTBEAT_FILE"])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if sys.argv[1] == "bad":
    sys.exit(2)
while True:
    beat.touch()
    time.sleep(0.05)
"""


def command(bad: set[int] | None = None) -> Callable[[int, int], list[str]]:
    def build(index: int, _share: int) -> list[str]:
        return [sys.executable, "-c", CHILD, "bad" if index in (bad or set()) else "good"]

    return build


def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def in_background(supervisor: Supervisor, action: Callable[[], None]) -> list[BaseException]:
    """Run `action` in a thread while the test's main thread runs the supervisor; then stop
    the supervisor as SIGTERM does (without sending the test process a signal)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as error:  # handed to the test, which raises it
            errors.append(error)
        finally:
            supervisor._on_signal(signal.SIGTERM, None)

    threading.Thread(target=run, daemon=True).start()
    return errors


def test_concurrency_is_shared_evenly_and_every_process_gets_some() -> None:
    assert concurrency_shares(500, 2) == [250, 250]
    assert concurrency_shares(7, 3) == [3, 2, 2]
    with pytest.raises(ValueError, match="concurrency 1 is less than processes 2"):
        concurrency_shares(1, 2)


@settings(max_examples=60, deadline=None)
@given(total=st.integers(-5, 3000), processes=st.integers(-5, 300))
def test_concurrency_shares_fuzz(total: int, processes: int) -> None:
    if total < processes or processes < 1:
        with pytest.raises(ValueError, match="processes"):
            concurrency_shares(total, processes)
        return
    shares = concurrency_shares(total, processes)
    assert sum(shares) == total
    assert len(shares) == processes
    assert max(shares) - min(shares) <= 1
    assert min(shares) >= 1


def test_a_killed_child_is_replaced_and_a_stop_drains_every_child(tmp_path: Path) -> None:
    node_beat = tmp_path / "node.beat"
    supervisor = Supervisor(
        command(), [3, 3], environment={}, heartbeat_file=node_beat, beat_dir=tmp_path
    )
    port_holder: list[int] = []

    def scenario() -> None:
        until(lambda: supervisor.report()["consuming"], "both children to beat")
        server = serve_node_health(supervisor, "127.0.0.1", 0)
        port_holder.append(server.server_address[1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port_holder[0]}/healthz") as answer:
            body = json.loads(answer.read())
        assert answer.status == 200
        assert [child["index"] for child in body["children"]] == [0, 1]
        first = supervisor.children[0].process
        assert first is not None
        first.send_signal(signal.SIGKILL)
        until(
            lambda: (
                supervisor.children[0].restarts == 1
                and supervisor.children[0].process is not None
                and supervisor.children[0].process.pid != first.pid
                and supervisor.report()["consuming"]
            ),
            "child 0 to be replaced",
        )
        until(node_beat.exists, "the node heartbeat file")
        server.shutdown()
        server.server_close()

    errors = in_background(supervisor, scenario)
    status = supervisor.run()
    if errors:
        raise errors[0]
    assert status == 0
    assert [child.restarts for child in supervisor.children] == [1, 0]
    assert [child.exit_status for child in supervisor.children] == [0, 0]
    assert not supervisor.report()["consuming"]


def test_a_child_with_a_configuration_error_stops_the_node_with_2(tmp_path: Path) -> None:
    supervisor = Supervisor(command(bad={0}), [1, 1], environment={}, beat_dir=tmp_path)
    assert supervisor.run() == 2
    assert [child.exit_status for child in supervisor.children] == [2, 0]
    assert [child.restarts for child in supervisor.children] == [0, 0]


def test_the_node_is_unhealthy_while_a_child_does_not_beat(tmp_path: Path) -> None:
    supervisor = Supervisor(command(), [1], environment={}, beat_dir=tmp_path)
    server = serve_node_health(supervisor, "127.0.0.1", 0)
    try:
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/healthz")
        assert answer.value.code == 503
        body = json.loads(answer.value.read())
        assert body["consuming"] is False
        assert body["children"][0]["pid"] is None  # not started
    finally:
        server.shutdown()
        server.server_close()


def test_a_child_dying_young_again_and_again_waits_longer_each_time() -> None:
    from worker.restarts import LIVED_LONG_SECONDS, RESTART_BACKOFF_SECONDS, restart_after

    deaths, waits = 0, []
    for _ in range(len(RESTART_BACKOFF_SECONDS) + 2):
        deaths, wait = restart_after(deaths, lived_seconds=1.0)
        waits.append(wait)
    assert waits == [
        *RESTART_BACKOFF_SECONDS,
        RESTART_BACKOFF_SECONDS[-1],
        RESTART_BACKOFF_SECONDS[-1],
    ]
    # A child that lived long restarts at once, and the back-off starts over.
    assert restart_after(deaths, lived_seconds=LIVED_LONG_SECONDS) == (0, 0.0)
    assert restart_after(0, lived_seconds=1.0) == (1, RESTART_BACKOFF_SECONDS[0])
