"""The JSON log bridge: structlog events and foreign stdlib records become one JSON object per
line, written whole even when many threads log at once."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from worker.observability.logging import configure_logging


@pytest.fixture
def log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "log.jsonl"
    with path.open("w", encoding="utf-8") as stream:
        monkeypatch.setattr("sys.stderr", stream)
        # Another test may have left warnings captured already (then capturing again is a
        # no-op, and pytest's own warning recorder may sit in front): start from scratch.
        logging.captureWarnings(False)
        configure_logging("info", "json")
        try:
            yield path
        finally:
            structlog.reset_defaults()
            for handler in list(logging.getLogger().handlers):
                logging.getLogger().removeHandler(handler)
            logging.captureWarnings(False)


def test_many_threads_of_structlog_and_stdlib_lines_never_interleave(log_file: Path) -> None:
    big = "x" * 20_000  # larger than any pipe or stdio buffer

    def chatter(index: int) -> None:
        for line in range(50):
            structlog.get_logger("posthoc.test").info("event.one", thread=index, line=line)
            logging.getLogger("celery.worker.consumer").info("Connected %s\nsecond", index)
            logging.getLogger("kombu.test").warning("big %s", big)

    threads = [threading.Thread(target=chatter, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library warning", UserWarning, stacklevel=1)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("celery.worker.request").exception("Couldn't ack %r", "tag")

    lines = log_file.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 8 * 50 * 3 + 2
    assert sum(r["event"] == "event.one" for r in records) == 400
    connected = [r for r in records if r.get("logger") == "celery.worker.consumer"]
    assert len(connected) == 400
    assert connected[0]["event"].startswith("Connected ")  # its own newline stays inside
    assert sum(r["event"] == f"big {big}" for r in records) == 400
    warned = [r for r in records if r.get("logger") == "py.warnings"]
    assert len(warned) == 1
    assert "a library warning" in warned[0]["event"]
    [failure] = [r for r in records if r.get("logger") == "celery.worker.request"]
    assert "ValueError: boom" in failure["exception"]
    assert failure["level"] == "error"


def test_celerys_signal_handler_notices_are_json_lines(
    log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery prints its shutdown notices from signal handlers; posthoc renders them as records
    without taking a logging lock."""
    import celery.apps.worker as celery_worker

    from worker.engine.celery_app import _keep_posthoc_logging

    monkeypatch.setattr(celery_worker, "safe_say", vars(celery_worker)["safe_say"])  # restored
    _keep_posthoc_logging()
    celery_worker.safe_say("worker: Warm shutdown (MainProcess)", None)  # type: ignore[attr-defined]
    [record] = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert record["event"] == "worker: Warm shutdown (MainProcess)"
    assert record["logger"] == "celery.apps.worker"


def test_celerys_task_succeeded_lines_are_dropped_at_info_and_nothing_else(
    log_file: Path,
) -> None:
    from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

    context = {"id": "abc", "name": "posthoc.run_analysis", "return_value": None, "runtime": 3.1}
    logging.getLogger("celery.worker.strategy").info(LOG_RECEIVED, context)
    logging.getLogger("celery.app.trace").info(LOG_SUCCESS, context)
    logging.getLogger("celery.app.trace").info("Task %(name)s[%(id)s] retry: soon", context)
    logging.getLogger("celery.app.trace").error("Task %(name)s[%(id)s] raised", context)
    structlog.get_logger("posthoc.worker").info("run.finished", run_id="r1")

    records = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert [(r["logger"], r["event"]) for r in records] == [
        ("celery.worker.strategy", "Task posthoc.run_analysis[abc] received"),
        ("celery.app.trace", "Task posthoc.run_analysis[abc] retry: soon"),
        ("celery.app.trace", "Task posthoc.run_analysis[abc] raised"),
        ("posthoc.worker", "run.finished"),
    ]


def test_celerys_task_succeeded_lines_come_through_when_debugging(tmp_path: Path) -> None:
    from celery.app.trace import LOG_SUCCESS

    path = tmp_path / "debug.log"
    with path.open("w", encoding="utf-8") as stream, contextlib.redirect_stderr(stream):
        configure_logging("debug", "json")
        try:
            configure_logging("debug", "json")  # configuring twice leaves no filter behind
            context = {
                "id": "abc",
                "name": "posthoc.run_analysis",
                "return_value": None,
                "runtime": 1,
            }
            logging.getLogger("celery.app.trace").info(LOG_SUCCESS, context)
        finally:
            structlog.reset_defaults()
            for handler in list(logging.getLogger().handlers):
                logging.getLogger().removeHandler(handler)
            logging.captureWarnings(False)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["event"] for r in records] == ["Task posthoc.run_analysis[abc] succeeded in 1s: None"]
