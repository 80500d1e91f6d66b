"""The benchmarks' `--smoke` runs, as CI makes them: each exits 0 and prints its ratio.

Benchmarks report figures, they never fail on them: these tests check only that each script
runs end to end (and closes its servers, clients and processes cleanly under
`filterwarnings=error`), never what it measured.
"""

from __future__ import annotations

import pytest

from benchmarks import _common, cost, runtime


def test_runtime_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert runtime.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "byte-identical" in out
    assert any("ratio" in line and "goal" in line for line in out.splitlines()), out


def test_cost_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert cost.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert "the same requests" in out
    assert any("ratio" in line and "goal" in line for line in out.splitlines()), out


def test_the_first_turns_of_a_conversation_keep_their_events() -> None:
    whole = _common.example_conversation("long_technical_support")
    cut = _common.first_turns(whole, 60)
    assert len(cut.turns) == 60
    assert cut.events
    assert all(e.turn_index is None or e.turn_index < 60 for e in cut.events)
