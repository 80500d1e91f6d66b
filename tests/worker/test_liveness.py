"""Liveness: the consumer's state, the watchdog's heartbeat file and exit, the stalled-consumer
check, and the health port (with a fuzz of what a client may send it)."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery.worker import state as worker_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.engine.liveness import (
    EXIT_NOT_CONSUMING,
    STALE_TICK_SECONDS,
    STALLS_BEFORE_NOT_CONSUMING,
    ConsumerWatch,
    Liveness,
    Watchdog,
    serve_health,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_consuming_only_while_started_and_ticking() -> None:
    clock = Clock()
    liveness = Liveness(clock)
    assert liveness.report().consuming is False
    liveness.consumer_started()
    assert liveness.report().consuming is True
    clock.now += STALE_TICK_SECONDS + 1  # the event loop stopped turning
    assert liveness.report().consuming is False
    liveness.tick()
    assert liveness.report().consuming is True
    liveness.consumer_stopped()
    clock.now += 4
    report = liveness.report()
    assert (report.consuming, report.state_seconds) == (False, 0.0)
    clock.now += 6
    assert liveness.report().state_seconds == 6.0
    liveness.consumer_started()
    assert liveness.report().restarts == 2


def test_the_watchdog_touches_the_heartbeat_file_and_exits_when_not_consuming(
    tmp_path: Path,
) -> None:
    clock = Clock()
    liveness = Liveness(clock)
    exits: list[int] = []
    beat = tmp_path / "heartbeat"
    watchdog = Watchdog(liveness, exit_after=30, heartbeat_file=beat, exit=exits.append)
    liveness.consumer_started()
    watchdog.check_once()
    assert beat.exists()
    beat.unlink()
    liveness.consumer_stopped()
    watchdog.check_once()
    clock.now += 29
    watchdog.check_once()
    assert exits == []
    assert not beat.exists()  # no heartbeat while not consuming
    liveness.stopping = True  # a warm shutdown: analyses finish, the worker is not stuck
    clock.now += 100
    watchdog.check_once()
    assert exits == []
    liveness.stopping = False
    watchdog.check_once()
    assert exits == [EXIT_NOT_CONSUMING]


def _consumer(limit: int, can_consume: bool, hub: object | None = object()) -> Any:
    channel = SimpleNamespace(qos=SimpleNamespace(can_consume=lambda: can_consume))
    return SimpleNamespace(
        pool=SimpleNamespace(limit=limit),
        task_consumer=SimpleNamespace(channel=channel),
        hub=hub,
        app=SimpleNamespace(conf={"posthoc_liveness": Liveness(), "posthoc_stall_seconds": 0.0}),
        timer=None,
    )


def test_a_full_prefetch_window_with_free_slots_forces_a_reconnect() -> None:
    consumer = _consumer(limit=3, can_consume=False)
    watch = ConsumerWatch(consumer)
    watch._check(consumer)  # first sight: remember when the stall began
    with pytest.raises(ConnectionResetError):
        watch._check(consumer)


def test_a_busy_or_healthy_consumer_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    healthy = _consumer(limit=3, can_consume=True)
    watch = ConsumerWatch(healthy)
    for _ in range(3):
        watch._check(healthy)
    busy = _consumer(limit=1, can_consume=False)
    monkeypatch.setattr(worker_state, "active_requests", {object()})
    watch = ConsumerWatch(busy)
    for _ in range(3):
        watch._check(busy)  # every slot busy: a full window is what prefetch means
    amqp = _consumer(limit=3, can_consume=True)
    amqp.task_consumer = SimpleNamespace(channel=SimpleNamespace())  # the broker keeps the QoS
    watch = ConsumerWatch(amqp)
    for _ in range(3):
        watch._check(amqp)


def _amqp_consumer(limit: int) -> Any:
    """A consumer on a transport whose broker keeps the prefetch window (no client QoS)."""
    consumer = _consumer(limit=limit, can_consume=True)
    consumer.task_consumer = SimpleNamespace(channel=SimpleNamespace())
    return consumer


def _stall_twice(watch: ConsumerWatch, consumer: Any) -> None:
    watch._check(consumer)  # first sight of the stall
    with pytest.raises(ConnectionResetError):
        watch._check(consumer)


def test_on_amqp_a_reserved_request_that_never_starts_forces_a_reconnect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Seen after a RabbitMQ outage: a redelivered message reserved, never started, slots free.
    consumer = _amqp_consumer(limit=3)
    liveness: Liveness = consumer.app.conf["posthoc_liveness"]
    liveness.consumer_started()
    monkeypatch.setattr(worker_state, "reserved_requests", {object()})
    monkeypatch.setattr(worker_state, "all_total_count", [7])
    watch = ConsumerWatch(consumer)
    _stall_twice(watch, consumer)
    assert liveness.report().consuming is True  # one forced reconnect: still worth a try


def test_on_amqp_messages_the_broker_held_after_the_last_start_mean_a_stall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = _amqp_consumer(limit=3)
    liveness: Liveness = consumer.app.conf["posthoc_liveness"]
    monkeypatch.setattr(worker_state, "all_total_count", [0])
    watch = ConsumerWatch(consumer)
    liveness.note_broker_depth(0)
    for _ in range(3):
        watch._check(consumer)  # nothing waits for this worker: idle, not stalled
    liveness.note_broker_depth(5)
    _stall_twice(watch, consumer)


def test_on_amqp_a_depth_measured_before_the_last_start_is_no_evidence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    consumer = _amqp_consumer(limit=3)
    liveness = Liveness(clock)
    consumer.app.conf["posthoc_liveness"] = liveness
    counter = [0]
    monkeypatch.setattr(worker_state, "all_total_count", counter)
    watch = ConsumerWatch(consumer)
    liveness.note_broker_depth(5)  # measured at 1000
    clock.now += 1
    counter[0] += 1  # a task started at 1001, after the measurement: it may have been that one
    for _ in range(3):
        clock.now += 1
        watch._check(consumer)
    liveness.note_broker_depth(5)  # still held at 1004: now it is evidence
    clock.now += 1
    _stall_twice(watch, consumer)


def test_on_amqp_repeated_stalls_without_a_start_report_not_consuming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = _amqp_consumer(limit=3)
    liveness: Liveness = consumer.app.conf["posthoc_liveness"]
    liveness.consumer_started()
    counter = [0]
    monkeypatch.setattr(worker_state, "all_total_count", counter)
    monkeypatch.setattr(worker_state, "reserved_requests", {object()})
    watch = ConsumerWatch(consumer)
    for _ in range(STALLS_BEFORE_NOT_CONSUMING):
        assert liveness.report().consuming is True
        _stall_twice(watch, consumer)
    report = liveness.report()
    assert report.consuming is False  # the watchdog's exit clock runs from here
    counter[0] += 1  # a task started after all: unstuck
    watch._check(consumer)
    assert liveness.report().consuming is True


@pytest.fixture
def health_port() -> Any:
    liveness = Liveness()
    server = serve_health(liveness, "127.0.0.1", 0)
    try:
        yield liveness, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_healthz_is_200_only_while_consuming(health_port: tuple[Liveness, int]) -> None:
    liveness, port = health_port
    status, body = _get(port, "/healthz")
    assert status == 503
    assert json.loads(body)["consuming"] is False
    liveness.consumer_started()
    status, body = _get(port, "/healthz")
    assert status == 200
    assert json.loads(body) == {
        "consuming": True,
        "state_seconds": json.loads(body)["state_seconds"],
        "last_tick_seconds": json.loads(body)["last_tick_seconds"],
        "consumer_restarts": 1,
    }
    assert _get(port, "/other")[0] == 404


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=st.binary(max_size=4096))
def test_the_health_port_survives_any_request_bytes(
    health_port: tuple[Liveness, int], request: bytes
) -> None:
    """Whatever a client sends, the port answers the next probe (no crash, no hang)."""
    _, port = health_port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        client.settimeout(5)
        try:
            while client.recv(65536):
                pass
        except TimeoutError:
            pytest.fail("the health port hung on a request")
        except ConnectionResetError:
            pass
    assert _get(port, "/healthz")[0] == 503
