"""Small helpers shared by the definition tests: write a fixture file, find its problems."""

from __future__ import annotations

import textwrap
from pathlib import Path

from analyzers.definitions.checks import check_definitions
from analyzers.definitions.loading import DefinitionSet, Problem, load_paths


def write(directory: Path, name: str, text: str) -> Path:
    """Write dedented `text` to `directory/name` (creating folders) and return the path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    """The 1-based number of the line containing `needle` for the `occurrence`-th time."""
    seen = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} (occurrence {occurrence}) is not in {path}")


def at(path: Path, number: int, text: str) -> int:
    """`number`, after checking that line `number` of `path` contains `text` (so a test's
    expected line is both exact and readable)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert 1 <= number <= len(lines), f"{path} has {len(lines)} lines, not {number}"
    assert text in lines[number - 1], f"line {number} of {path} is {lines[number - 1]!r}"
    return number


def load(*paths: Path) -> DefinitionSet:
    """Load `paths` as `posthoc validate` does."""
    return load_paths(paths)


def all_problems(*paths: Path) -> list[Problem]:
    """Loading problems and cross-definition problems, as `posthoc validate` prints them."""
    loaded = load_paths(paths)
    return loaded.problems + check_definitions(loaded)


def only(problems: list[Problem]) -> Problem:
    """The single problem in `problems`; fails with the whole list otherwise."""
    assert len(problems) == 1, "\n".join(str(problem) for problem in problems)
    return problems[0]
