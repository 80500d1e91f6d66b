"""`benchmarks/intake.py --smoke` runs end to end and prints its ratio (never checks figures)."""

from __future__ import annotations

import pytest

from benchmarks import intake


def test_intake_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert intake.main(["--smoke", "--requests", "12", "--connections", "2"]) == 0
    out = capsys.readouterr().out
    assert "webhook intake (SQLite, embedded queue)" in out
    assert "{202: 36}" in out  # every signed delivery was accepted, in each of 3 rounds
    assert any("ratio" in line and "goal" in line for line in out.splitlines()), out
    assert "CPU per delivery" in out
    assert "load average" in out
