"""`posthoc validate` and `posthoc schema` through the real command line.

Each file in tests/fixtures/invalid breaks one rule; its first line (or, for JSON, a sidecar
`<name>.expect` file) says `# expect: <rule-id> line <N>`. The command must reject it with exactly
that `file:line` and `[rule]`, on one line.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from typer.testing import CliRunner, Result

from worker.cli.commands import app

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "invalid"
EXAMPLES = REPO / "examples"
CONVERSATIONS = EXAMPLES / "conversations"
DEFINITION_FOLDERS = [
    EXAMPLES / "analyzers",
    EXAMPLES / "procedures",
    REPO / "analyzers" / "builtin",
]

EXPECT = re.compile(r"^#\s*expect:\s*(?P<rule>[A-Za-z0-9_-]+)\s+line\s+(?P<line>\d+)\s*$")
PROBLEM_LINE = re.compile(
    r"^(?P<file>.+?):(?P<line>\d+): (?P<field>\S+): (?P<message>.+) \[(?P<rule>[A-Za-z0-9_-]+)\]$"
)


@dataclass(frozen=True)
class Expected:
    """The one problem a fixture must produce."""

    path: Path
    rule: str
    line: int


def expectation(path: Path) -> Expected:
    """Read a fixture's `# expect:` line, from its first line or its `.expect` sidecar."""
    source = path.with_suffix(".expect") if path.suffix in {".json", ".jsonl"} else path
    first = source.read_text(encoding="utf-8").splitlines()[0]
    match = EXPECT.match(first)
    assert match, f"{source} must start with '# expect: <rule-id> line <N>', not {first!r}"
    return Expected(path, match["rule"], int(match["line"]))


def fixtures() -> list[Expected]:
    """Every fixture file with its expectation."""
    found = sorted(
        path for path in FIXTURES.iterdir() if path.suffix in {".yaml", ".yml", ".json", ".jsonl"}
    )
    return [expectation(path) for path in found]


FIXTURE_EXPECTATIONS = fixtures()

runner = CliRunner()


def invoke(*arguments: str) -> Result:
    """Run `posthoc ARGUMENTS...` in-process, the way the console script does."""
    return runner.invoke(app, list(arguments))


def problem_lines(stdout: str) -> list[str]:
    """The lines of `validate` output that report problems."""
    return [line for line in stdout.splitlines() if line.strip()]


def posthoc_script() -> Path:
    """The installed `posthoc` console script of this virtualenv."""
    beside_python = Path(sys.executable).parent / "posthoc"
    if beside_python.exists():
        return beside_python
    found = shutil.which("posthoc")
    assert found, "the posthoc console script is not installed (pip install -e .)"
    return Path(found)


# --------------------------------------------------------------------------------------------
# Invalid fixtures


def test_there_is_a_fixture_for_every_required_rule() -> None:
    """The fixture folder covers the rules the suite promises to check end to end."""
    rules = {expected.rule for expected in FIXTURE_EXPECTATIONS}
    required = {
        "if-not-first",
        "if-not-nested",
        "if-not-consecutive",
        "template-undeclared",
        "tool-allowed",
        "expression-valid",
        "kind-known",
        "yaml-syntax",
        "missing",
    }
    assert required <= rules
    assert any(e.path.suffix == ".json" for e in FIXTURE_EXPECTATIONS)


@pytest.mark.parametrize(
    "expected", FIXTURE_EXPECTATIONS, ids=[e.path.name for e in FIXTURE_EXPECTATIONS]
)
def test_validate_rejects_fixture(expected: Expected) -> None:
    """`posthoc validate` exits 1 on the fixture and prints exactly its one expected problem as
    `file:line: field: message [rule]`."""
    result = invoke("validate", str(expected.path))
    assert result.exit_code == 1, result.output
    lines = problem_lines(result.stdout)
    assert len(lines) == 1, result.stdout
    match = PROBLEM_LINE.match(lines[0])
    assert match, lines[0]
    assert (match["file"], int(match["line"]), match["rule"]) == (
        str(expected.path),
        expected.line,
        expected.rule,
    ), lines[0]
    assert result.stderr.strip() == "1 problem(s) found"


def test_installed_script_rejects_every_fixture() -> None:
    """The installed `posthoc` script, run on the whole fixture folder, exits 1 and prints one
    line per problem: exactly the fixtures' expected problems."""
    completed = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(posthoc_script()), "validate", str(FIXTURES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert completed.returncode == 1, completed.stderr
    lines = problem_lines(completed.stdout)
    found = set()
    for line in lines:
        match = PROBLEM_LINE.match(line)
        assert match, line
        found.add((match["file"], int(match["line"]), match["rule"]))
    expected = {(str(e.path), e.line, e.rule) for e in FIXTURE_EXPECTATIONS}
    assert found == expected
    assert len(lines) == len(expected)
    assert completed.stderr.strip() == f"{len(expected)} problem(s) found"


def test_validate_reports_every_problem_of_a_file_one_per_line(tmp_path: Path) -> None:
    """Several problems in one file are all printed, each on its own line."""
    path = tmp_path / "many.yaml"
    path.write_text(
        "kind: procedure\n"
        "name: p\n"
        "trigger: {description: d}\n"
        "steps:\n"
        "  - if: {expression: 'true'}\n"
        "    steps: [{instruction: a}]\n"
        "  - tool: t\n"
        "    arguments: {x: '{{nope}}'}\n",
        encoding="utf-8",
    )
    result = invoke("validate", str(path))
    assert result.exit_code == 1
    lines = problem_lines(result.stdout)
    rules = sorted(m["rule"] for m in map(PROBLEM_LINE.match, lines) if m)
    assert len(rules) == len(lines)
    assert rules == ["if-not-first", "template-undeclared"]


# --------------------------------------------------------------------------------------------
# Valid inputs


def test_examples_and_builtins_validate() -> None:
    """The shipped analyzers and procedures are valid: exit 0 and a summary line."""
    result = invoke("validate", *map(str, DEFINITION_FOLDERS))
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"ok: \d+ analyzer\(s\), \d+ procedure\(s\), 0 conversation\(s\)\n", result.stdout
    ), result.stdout


def example_conversation_files() -> list[Path]:
    """The example conversation files, JSON and JSON Lines."""
    if not CONVERSATIONS.is_dir():
        return []
    return sorted([*CONVERSATIONS.glob("*.json"), *CONVERSATIONS.glob("*.jsonl")])


def test_example_conversations_validate() -> None:
    """Everything under examples/, conversations included, is valid."""
    if not any(path.suffix == ".json" for path in example_conversation_files()):
        pytest.skip("examples/conversations has no .json file yet")
    result = invoke("validate", str(EXAMPLES))
    assert result.exit_code == 0, result.output
    expected = 0
    for path in example_conversation_files():
        if path.suffix == ".json":
            expected += 1
        else:
            expected += sum(1 for line in path.read_text().splitlines() if line.strip())
    assert f"{expected} conversation(s)" in result.stdout


def test_missing_path_is_a_problem() -> None:
    """A path that does not exist makes validate exit 1 with a `path-exists` problem."""
    missing = REPO / "tests" / "fixtures" / "no-such-folder"
    result = invoke("validate", str(missing))
    assert result.exit_code == 1
    assert problem_lines(result.stdout) == [f"{missing}: (path): no such file [path-exists]"]


def test_missing_path_does_not_hide_other_problems() -> None:
    """A missing path is reported beside the problems of the paths that exist."""
    fixture = FIXTURES / "unknown_kind.yaml"
    result = invoke("validate", str(REPO / "nope.yaml"), str(fixture))
    assert result.exit_code == 1
    assert [line.rsplit("[", 1)[1] for line in problem_lines(result.stdout)] == [
        "path-exists]",
        "kind-known]",
    ]


# --------------------------------------------------------------------------------------------
# Schemas


def printed_schema(name: str) -> dict[str, Any]:
    """The JSON Schema `posthoc schema NAME` prints."""
    result = invoke("schema", name)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


@pytest.mark.parametrize("name", ["conversation", "analyzer", "procedure", "result"])
def test_schema_prints_a_valid_draft_2020_12_schema(name: str) -> None:
    """`posthoc schema NAME` prints JSON that is itself a valid Draft 2020-12 schema."""
    document = printed_schema(name)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(document)
    assert document["type"] == "object"


def test_schema_of_unknown_contract_is_a_usage_error() -> None:
    """Asking for a contract that does not exist is a usage error, not a traceback."""
    result = invoke("schema", "widget")
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_example_conversations_fit_the_printed_schema() -> None:
    """Every example conversation (each line of a .jsonl) is valid under `posthoc schema
    conversation`, as an editor or another tool would check it."""
    files = example_conversation_files()
    if not files:
        pytest.skip("examples/conversations has no conversation yet")
    validator = Draft202012Validator(printed_schema("conversation"))
    problems: list[str] = []
    for path in files:
        if path.suffix == ".json":
            documents = [(1, json.loads(path.read_text(encoding="utf-8")))]
        else:
            documents = [
                (number, json.loads(line))
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if line.strip()
            ]
        for number, document in documents:
            problems += [
                f"{path.name}:{number}: {list(e.absolute_path)}: {e.message}"
                for e in validator.iter_errors(document)
            ]
    assert problems == []


def test_example_definitions_fit_the_printed_schemas() -> None:
    """Every analyzer and procedure YAML in examples and builtin is valid under the schema
    `posthoc schema analyzer|procedure` prints (editors use it)."""
    validators = {
        kind: Draft202012Validator(printed_schema(kind)) for kind in ("analyzer", "procedure")
    }
    problems: list[str] = []
    checked = 0
    for folder in DEFINITION_FOLDERS:
        for path in sorted(folder.glob("*.y*ml")):
            for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if document is None:
                    continue
                checked += 1
                problems += [
                    f"{path.name}: {list(e.absolute_path)}: {e.message}"
                    for e in validators[document["kind"]].iter_errors(document)
                ]
    assert checked >= 9
    assert problems == []
