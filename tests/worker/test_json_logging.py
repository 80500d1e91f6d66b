"""The JSON log bridge: structlog events and foreign stdlib records become one JSON object per
line, written whole even when many threads log at once."""

from __future__ import annotations

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
            logging.getLogger("celery.worker.strategy").info("Task %s received\nsecond", index)
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
    received = [r for r in records if r.get("logger") == "celery.worker.strategy"]
    assert len(received) == 400
    assert received[0]["event"].startswith("Task ")  # the message's own newline stays inside
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
