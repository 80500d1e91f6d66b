"""Property-based fuzz of `posthoc validate`, `submit` and `run` through the CLI.

Each example is a batch: valid conversations beside hostile records (mutated fields, NUL and
unpaired surrogates, 20,000-deep nesting, 6,000-digit numbers, invalid UTF-8, broken JSON,
random bytes) and, for `validate`, mutated and hostile analyzer/procedure YAML (billion laughs,
self-referencing anchors, `$ref` cycles, CEL nested five deep). Every command must end with a
usage-free exit code and no traceback, stay within a memory bound (tracemalloc peak), keep the
marker planted in hostile text out of its output, and process every valid record of the batch.

CI runs a few examples per command (seconds each); `POSTHOC_FUZZ_EXAMPLES=200` runs longer.
`-s` shows one summary line per fuzz run.
"""

from __future__ import annotations

import json
import os
import re
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

# `run` imports the fake server and the SDK lazily; importing them here keeps first-import
# allocations out of the measured peak.
import worker.cli.demo
import worker.engine.celery_app
import worker.engine.service
from schemas import AnalysisResult
from worker.cli.commands import app

MARKER = "SECRET-4111-MARKER"
# Any piece of the marker, so a truncated excerpt is caught too. The digits only count
# on their own: run ids are hex and contain "4111" by chance about once in 2,000.
LEAKED_PART = re.compile(r"SECRET|MARKER|(?<![0-9a-f])4111(?![0-9a-f])")
EXAMPLES = int(os.environ.get("POSTHOC_FUZZ_EXAMPLES", "0"))
PEAK_LIMIT = 200 * 1024 * 1024
"""Bytes Python may allocate at peak for one command on a batch of small hostile files (the
billion-laughs file took 6 GB before the limits)."""

RULE = re.compile(r"\[([a-z][a-z0-9_-]+)\]")
"""The rule of a printed problem (`run` wraps long lines, so not anchored to the line end)."""

pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)


def fuzz_settings(ci_examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=EXAMPLES or ci_examples,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


# -- Records -----------------------------------------------------------------------------


def valid_conversation(conversation_id: str) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "tenant_id": "acme",
        "agent_id": "support-bot",
        "channel": "chat",
        "started_at": "2026-11-20T09:00:00Z",
        "ended_at": "2026-11-20T09:05:00Z",
        "outcome": "resolved",
        "turns": [
            {"role": "user", "text": "My order never arrived."},
            {"role": "agent", "text": "I am sorry; I will look into it."},
        ],
    }


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
hostile_text = st.sampled_from(
    [f"{MARKER}\x00", f"{MARKER}\ud800", f"{MARKER}" + "x" * 1_100_000, f"\x00{MARKER}\udfff"]
)
FIELDS = [
    "conversation_id",
    "tenant_id",
    "channel",
    "started_at",
    "ended_at",
    "outcome",
    "turns",
    "events",
    "metadata",
]


@st.composite
def mutated_record(draw: st.DrawFn, conversation_id: str) -> bytes:
    """A conversation with one field replaced, removed or filled with hostile text."""
    data = valid_conversation(conversation_id)
    data["turns"][0]["text"] = f"{MARKER} my card"
    field = draw(st.sampled_from(FIELDS))
    how = draw(st.sampled_from(["replace", "remove", "hostile-text", "hostile-turn"]))
    if how == "replace":
        data[field] = draw(json_values)
    elif how == "remove":
        data.pop(field, None)
    elif how == "hostile-text":
        data["metadata"] = {draw(st.sampled_from(["note", f"k{MARKER}\x00"])): draw(hostile_text)}
    else:
        data["turns"].append({"role": "user", "text": draw(hostile_text)})
    return json.dumps(data).encode("utf-8", "surrogatepass")


@st.composite
def raw_hostile_line(draw: st.DrawFn) -> bytes:
    """A line that is not a valid record at the JSON level."""
    kind = draw(st.sampled_from(["deep", "digits", "utf8", "truncated", "bytes", "nan"]))
    if kind == "deep":
        depth = draw(st.integers(65, 20_000))
        return b'{"metadata": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "digits":
        digits = draw(st.integers(101, 6000))
        return (
            json.dumps(valid_conversation("digits")).encode()[:-1]
            + b', "n": '
            + b"9" * digits
            + b"}"
        )
    if kind == "utf8":
        return json.dumps(valid_conversation("utf8")).encode().replace(b"acme", b"ac\xe9me")
    if kind == "truncated":
        text = json.dumps(valid_conversation(MARKER)).encode()
        return text[: draw(st.integers(1, len(text) - 1))]
    if kind == "nan":
        return json.dumps(valid_conversation("nan")).encode()[:-1] + b', "n": NaN}'
    return draw(st.binary(min_size=1, max_size=200)).replace(b"\n", b" ")


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[bytes], list[str]]:
    """JSONL lines mixing hostile records with valid ones, and the valid ids."""
    tag = uuid.uuid4().hex[:8]
    valid_ids = [f"valid-{tag}-{i}" for i in range(draw(st.integers(1, 3)))]
    lines = [json.dumps(valid_conversation(cid)).encode() for cid in valid_ids]
    hostile = draw(
        st.lists(mutated_record(f"hostile-{tag}") | raw_hostile_line(), min_size=1, max_size=4)
    )
    lines += hostile
    order = draw(st.permutations(range(len(lines))))
    return [lines[i] for i in order], valid_ids


# -- Definitions -------------------------------------------------------------------------

BASE_ANALYZER: dict[str, Any] = {
    "kind": "analyzer",
    "name": "checker",
    "description": "Checks things.",
    "instructions": "Check the conversation.",
    "trigger": {"expression": "turn_count > 0"},
    "outputs": [{"name": "verdict", "description": "The verdict.", "schema": {"type": "string"}}],
}
LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)
HOSTILE_YAML = [
    "kind: procedure\nname: lol\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + LAUGHS,
    "kind: procedure\nname: loop\nx: &x\n  - *x\n",
    "kind: procedure\nname: deep\nx: " + "[" * 3000 + "]" * 3000 + "\n",
    "kind: procedure\nname: n\nversion: " + "9" * 5000 + "\n",
    yaml.safe_dump(
        BASE_ANALYZER
        | {
            "trigger": {
                "expression": "turns.all(a, turns.all(b, turns.all(c, turns.all(d, "
                "turns.all(e, a.role == e.role)))))"
            }
        }
    ),
    yaml.safe_dump(
        BASE_ANALYZER
        | {
            "outputs": [
                {
                    "name": "tree",
                    "description": "A tree.",
                    "schema": {
                        "type": "object",
                        "properties": {"next": {"$ref": "#/$defs/n"}},
                        "$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}},
                    },
                }
            ]
        }
    ),
    "kind: analyzer\nname: x\ndescription: \x00" + MARKER + "\n",
    "kind: [unclosed\n",
]


@st.composite
def definition_files(draw: st.DrawFn) -> list[str]:
    files = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            files.append(draw(st.sampled_from(HOSTILE_YAML)))
        else:
            data = json.loads(json.dumps(BASE_ANALYZER))
            data["name"] = f"checker_{len(files)}"
            key = draw(st.sampled_from([*data, "trigger", "outputs"]))
            data[key] = draw(json_values | st.sampled_from([data.get(key)]))
            files.append(yaml.safe_dump(data, allow_unicode=True))
    return files


# -- Running -----------------------------------------------------------------------------


class Outcomes:
    """Counts of what the fuzz saw, printed as one line at the end of a fuzz run."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.exits: Counter[int] = Counter()
        self.rules: Counter[str] = Counter()
        self.peak = 0
        self.examples = 0

    def add(self, result: Result, peak: int) -> None:
        self.examples += 1
        self.exits[result.exit_code] += 1
        self.peak = max(self.peak, peak)
        self.rules.update(RULE.findall(result.output))

    def summary(self) -> str:
        rules = ", ".join(f"{rule}={count}" for rule, count in self.rules.most_common(8))
        return (
            f"fuzz {self.name}: {self.examples} examples, exit codes {dict(self.exits)}, "
            f"peak {self.peak / 1e6:.1f} MB, top problems: {rules}"
        )


def invoke_measured(*args: str) -> tuple[Result, int]:
    """Run a command in this process: an escaping exception fails the test (no traceback);
    returns the result and the peak bytes Python allocated meanwhile."""
    tracemalloc.start()
    try:
        result = CliRunner().invoke(app, list(args), catch_exceptions=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def check_clean(result: Result, peak: int) -> None:
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output
    assert MARKER not in result.output
    assert not LEAKED_PART.search(result.output), result.output
    assert peak < PEAK_LIMIT, f"peak {peak} bytes"


def write_batch(folder: Path, lines: list[bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "batch.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture
def outcomes(request: pytest.FixtureRequest) -> Iterator[Outcomes]:
    counted = Outcomes(request.node.name)
    yield counted
    print(counted.summary())  # the summary line `-s` shows


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run ids `posthoc submit` puts on the broker (captured instead of sent)."""
    sent: list[str] = []
    monkeypatch.setattr(
        worker.engine.celery_app, "enqueue_with", lambda _app, _ledger=None: sent.extend
    )
    return sent


def test_fuzz_validate(workdir: Path, outcomes: Outcomes) -> None:
    @fuzz_settings(ci_examples=10)
    @given(batch=batches(), definitions=definition_files())
    def check(batch: tuple[list[bytes], list[str]], definitions: list[str]) -> None:
        folder = workdir / uuid.uuid4().hex
        write_batch(folder, batch[0])
        for index, text in enumerate(definitions):
            (folder / f"def{index}.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        result, peak = invoke_measured("validate", str(folder))
        check_clean(result, peak)
        problems = [line for line in result.stdout.splitlines() if line.startswith(str(folder))]
        # A mutation can leave a record valid; exit 1 exactly when problems are printed.
        assert (result.exit_code == 1) == bool(problems), result.output
        if result.exit_code == 0:
            counted = re.search(r"(\d+) conversation\(s\)", result.stdout)
            assert counted is not None
            assert int(counted.group(1)) >= len(batch[1])
        outcomes.add(result, peak)

    check()


def test_fuzz_submit(ledger_url: str, workdir: Path, queued: list[str], outcomes: Outcomes) -> None:
    @fuzz_settings(ci_examples=5)
    @given(batch=batches())
    def check(batch: tuple[list[bytes], list[str]]) -> None:
        lines, valid_ids = batch
        before = len(queued)
        path = write_batch(workdir / uuid.uuid4().hex, lines)
        result, peak = invoke_measured("submit", str(path), "--analyzer", "follow_ups")
        check_clean(result, peak)
        submitted = {line.split("\t")[2] for line in result.stdout.splitlines()}
        assert set(valid_ids) <= submitted
        assert len(queued) - before >= len(valid_ids)
        assert set(valid_ids) <= stored_ids(ledger_url)
        outcomes.add(result, peak)

    check()


def test_fuzz_run(ledger_url: str, workdir: Path, outcomes: Outcomes) -> None:

    @fuzz_settings(ci_examples=2)
    @given(batch=batches())
    def check(batch: tuple[list[bytes], list[str]]) -> None:
        lines, valid_ids = batch
        folder = workdir / uuid.uuid4().hex
        path = write_batch(folder, lines)
        out = folder / "results.jsonl"
        result, peak = invoke_measured(
            "run", str(path), "--simulate", "--analyzer", "follow_ups", "--out", str(out)
        )
        check_clean(result, peak)
        results = [
            AnalysisResult.model_validate_json(line)
            for line in out.read_text(encoding="utf-8").splitlines()
        ]
        done = {r.conversation_id for r in results if r.status in ("succeeded", "skipped")}
        assert set(valid_ids) <= done
        outcomes.add(result, peak)

    check()


def stored_ids(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT conversation_id FROM conversations")
            return {row[0] for row in rows}
    finally:
        engine.dispose()
