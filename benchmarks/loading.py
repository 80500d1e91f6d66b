"""Loading a large JSON conversation: posthoc's loader against plain parse-and-validate.

    python benchmarks/loading.py [--smoke] [--turns N] [--rounds R]

The baseline, measured in the same process on the same file, is what any loader must do:
`json.loads` and `Conversation.model_validate`. posthoc's loader adds input limits, and works
out lines only when a problem needs one; the figure to watch is the ratio (goal: at most 1.5).
For comparison it also times the YAML line map the loader used to build for every JSON file
(98% of 37 s for a 100k-turn file before), on a smaller cut (it is quadratic-ish in practice).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in {None, ""}:  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analyzers.definitions.loading import load_paths
from analyzers.definitions.sourcemap import parse_documents
from schemas import Conversation

GOAL = 1.5


def conversation_text(turns: int) -> str:
    """A conversation with `turns` turns, one field per line as editors write it."""
    data = {
        "conversation_id": "big",
        "tenant_id": "acme",
        "agent_id": "support-bot",
        "channel": "voice",
        "started_at": "2026-11-20T09:00:00Z",
        "ended_at": "2026-11-20T12:00:00Z",
        "turns": [
            {"role": "user" if i % 2 else "agent", "text": f"Turn {i}: something was said here."}
            for i in range(turns)
        ],
    }
    return json.dumps(data, indent=2)


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="a short run, for CI")
    parser.add_argument("--turns", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=0)
    args = parser.parse_args(argv)
    turns = args.turns or (2_000 if args.smoke else 100_000)
    rounds = args.rounds or (2 if args.smoke else 5)
    text = conversation_text(turns)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.json"
        path.write_text(text, encoding="utf-8")

        def loader() -> None:
            loaded = load_paths([path])
            if loaded.problems or len(loaded.conversations) != 1:
                raise RuntimeError(f"the benchmark file did not load: {loaded.problems}")

        def baseline() -> None:
            Conversation.model_validate(json.loads(path.read_text(encoding="utf-8")))

        ratios = []
        print(f"loading one JSON conversation of {turns} turns ({len(text) / 1e6:.1f} MB)")
        print("round  loader ms  baseline ms  ratio")
        for index in range(rounds):
            ours, base = timed(loader), timed(baseline)
            ratios.append(ours / base)
            print(f"{index:>5}  {ours * 1e3:>9.1f}  {base * 1e3:>11.1f}  {ours / base:>5.2f}")
        print(f"median ratio {statistics.median(ratios):.2f} (goal: at most {GOAL})")
        cut = conversation_text(min(turns, 2_000))
        yaml_seconds = timed(lambda: next(parse_documents(cut)))
        base_cut = timed(lambda: Conversation.model_validate(json.loads(cut)))
        print(
            f"for comparison, the old YAML line map on 2,000 turns: ratio "
            f"{yaml_seconds / base_cut:.1f} against the same baseline"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
