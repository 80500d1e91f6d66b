"""`posthoc beat` as a command: `--once` fires what is due and nothing twice, bad schedule files
are usage errors naming file, line, field and rule, and two real beat processes on one ledger
fire every slot exactly once while the leaseholder is SIGKILLed and the other takes over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from worker.cli import app
from worker.ledger import Ledger
from worker.ledger.schedules import ScheduleLedger

# kombu's SQL transport (the embedded broker) declares its models with `noload`, which
# SQLAlchemy 2.1 deprecates; the warning is theirs.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)

SCHEDULE = """
kind: schedule
name: digest_every_second
interval: {seconds: 1}
missed_grace: {minutes: 5}
standalone: {analyzer: daily_digest, tenant: acme, since: {hours: 24}}
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def write_schedule(folder: Path, text: str = SCHEDULE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "digest.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return folder


def test_beat_once_fires_what_is_due_and_nothing_twice(workdir: Path) -> None:
    folder = write_schedule(workdir / "schedules")
    first = invoke("beat", "--once", str(folder))
    assert first.exit_code == 0, first.stderr
    [line] = first.stdout.splitlines()
    assert line.startswith("fired\tdigest_every_second\t")
    with Ledger.from_url(os.environ["POSTHOC_DATABASE_URL"]) as ledger:
        [firing] = ScheduleLedger(ledger.engine).firings()
        assert firing.status == "fired"
        [result] = ledger.list_runs(analyzer="daily_digest")
        assert result.status == "queued"
        assert firing.detail == {"run_id": result.id, "created": True}
        assert ScheduleLedger(ledger.engine).lease_holder() is None, "released on exit"


def test_a_bad_schedule_is_a_usage_error_with_file_line_field_and_rule(workdir: Path) -> None:
    folder = write_schedule(
        workdir / "schedules",
        """
        kind: schedule
        name: broken
        cron: "61 * * * *"
        standalone: {analyzer: quality, since: {hours: 24}}
        """,
    )
    result = invoke("beat", "--once", str(folder))
    assert result.exit_code == 2
    file = folder / "digest.yaml"
    assert f"{file}:3: cron: '61 * * * *' is not a valid cron expression [cron-valid]" in (
        result.stderr
    )
    assert "schedule 'broken': standalone.analyzer: 'quality' has input: conversation" in (
        result.stderr
    )
    assert invoke("beat", "--once").exit_code == 2, "no schedules at all is a usage error"


def _beat(folder: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own entry point
        [sys.executable, "-c", "from worker.cli import main; main()", "beat", str(folder)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s")


def test_two_beat_processes_fire_each_slot_once_across_a_sigkill(workdir: Path) -> None:
    folder = write_schedule(workdir / "schedules")
    env = {
        **os.environ,
        "POSTHOC_BEAT_LEASE_SECONDS": "2",
        "POSTHOC_BEAT_TICK_SECONDS": "0.2",
        "POSTHOC_LOG_LEVEL": "warning",
    }
    ledger = Ledger.from_url(os.environ["POSTHOC_DATABASE_URL"])
    ledger.migrate()  # so the test can read while the first beat starts
    store = ScheduleLedger(ledger.engine)
    beats = [_beat(folder, env), _beat(folder, env)]
    try:
        _wait_for(lambda: len(store.firings()) >= 3, timeout=60)
        holder = store.lease_holder()
        assert holder is not None
        pid = int(holder.owner.split(":")[1])
        leader = next(beat for beat in beats if beat.pid == pid)
        survivor = next(beat for beat in beats if beat.pid != pid)
        leader.send_signal(signal.SIGKILL)
        leader.wait(timeout=10)
        # The survivor takes the lease over once it has expired, and catches up.
        _wait_for(
            lambda: any(f.owner.split(":")[1] == str(survivor.pid) for f in store.firings()),
            timeout=30,
        )
        time.sleep(0.5)
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=20) == 0
        assert store.lease_holder() is None, "a SIGTERMed beat releases the lease"
    finally:
        for beat in beats:
            if beat.poll() is None:
                beat.kill()
                beat.wait(timeout=10)
    firings = store.firings()
    slots = [f.scheduled_for for f in firings]
    assert Counter(slots).most_common(1)[0][1] == 1, "no slot fired twice"
    expected = [slots[0] + timedelta(seconds=n) for n in range(len(slots))]
    assert slots == expected, "every second between the first and the last slot fired"
    assert {f.status for f in firings} <= {"fired", "firing"}
    owners = {f.owner.split(":")[1] for f in firings}
    assert owners == {str(leader.pid), str(survivor.pid)}
    runs = ledger.list_runs(analyzer="daily_digest", limit=10_000)
    assert len(runs) == len(firings), "one standalone run per slot"
    ledger.dispose()
