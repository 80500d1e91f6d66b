"""Load analyzers, procedures and conversations from files, with located problems.

`load_paths` reads YAML definitions (`kind: analyzer` or `kind: procedure`, several documents
per file allowed) and JSON / JSON Lines conversations from files and directories. It never stops
at the first problem: every valid definition is kept and every problem is reported with its file,
line, field and the rule it breaks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from analyzers.definitions.sourcemap import (
    Document,
    SourceError,
    SourceMap,
    parse_documents,
    parse_documents_lenient,
)
from schemas.analyzer import AnalyzerSpec
from schemas.conversation import Conversation
from schemas.procedure import Procedure
from schemas.rules import RULE_VIOLATIONS, Loc, render_loc

DEFINITION_SUFFIXES = (".yaml", ".yml")
CONVERSATION_SUFFIXES = (".json", ".jsonl")
DEFINITION_KINDS: dict[str, type[AnalyzerSpec] | type[Procedure]] = {
    "analyzer": AnalyzerSpec,
    "procedure": Procedure,
}

# Lists whose items are tagged unions: pydantic puts the tag right after the item's index in
# error locations, and a person reading the error should not see it.
_TAGGED_LISTS = frozenset({"steps", "tools", "sinks"})

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Problem:
    """One thing wrong in one file, said so that a person can fix it."""

    file: str
    line: int | None
    field: str
    rule: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message} [{self.rule}]"


@dataclass(frozen=True)
class Sourced(Generic[M]):
    """A valid definition and where it came from, so later checks can point at its lines."""

    value: M
    file: str
    data: Any
    source_map: SourceMap

    def line_of(self, loc: Loc) -> int | None:
        """The file line of a location inside this definition."""
        return self.source_map.line_of(self.data, loc)

    def problem(self, loc: Loc, rule: str, message: str) -> Problem:
        """A problem located inside this definition."""
        return Problem(self.file, self.line_of(loc), render_loc(loc), rule, message)


@dataclass
class DefinitionSet:
    """Everything loaded from a set of paths, and every problem found on the way."""

    analyzers: list[Sourced[AnalyzerSpec]] = field(default_factory=list)
    procedures: list[Sourced[Procedure]] = field(default_factory=list)
    conversations: list[Sourced[Conversation]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def extend(self, other: DefinitionSet) -> None:
        """Add everything from `other` to this set."""
        self.analyzers += other.analyzers
        self.procedures += other.procedures
        self.conversations += other.conversations
        self.problems += other.problems


def load_paths(paths: Iterable[Path | str]) -> DefinitionSet:
    """Load every definition and conversation under `paths` (files or directories)."""
    loaded = DefinitionSet()
    for path in expand_paths(paths, DEFINITION_SUFFIXES + CONVERSATION_SUFFIXES, loaded.problems):
        if path.suffix in DEFINITION_SUFFIXES:
            loaded.extend(load_definition_file(path))
        else:
            loaded.extend(load_conversation_file(path))
    return loaded


def expand_paths(
    paths: Iterable[Path | str], suffixes: tuple[str, ...], problems: list[Problem]
) -> Iterator[Path]:
    """Files named directly, and files with `suffixes` found below directories, sorted.

    Names starting with `.` or `_` are skipped inside directories (editor backups, generators).
    """
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                hidden = any(part.startswith((".", "_")) for part in child.relative_to(path).parts)
                if child.is_file() and child.suffix in suffixes and not hidden:
                    yield child
        elif path.is_file():
            yield path
        else:
            problems.append(Problem(str(path), None, "(path)", "path-exists", "no such file"))


def load_definition_file(path: Path) -> DefinitionSet:
    """Load the analyzers and procedures of one YAML file."""
    loaded = DefinitionSet()
    file = str(path)
    text = _read_text(path, loaded)
    if text is None:
        return loaded
    for document in parse_documents_lenient(text):
        if isinstance(document, SourceError):
            rule = "yaml-duplicate-key" if "appears twice" in str(document) else "yaml-syntax"
            loaded.problems.append(Problem(file, document.line, "(file)", rule, str(document)))
        else:
            _load_definition(file, document, loaded)
    return loaded


def _load_definition(file: str, document: Document, loaded: DefinitionSet) -> None:
    data = document.data
    if not isinstance(data, dict):
        loaded.problems.append(
            Problem(
                file,
                document.start_line,
                "(document)",
                "document-mapping",
                f"a definition is a mapping of fields, not {type(data).__name__}",
            )
        )
        return
    kind = data.get("kind")
    model = DEFINITION_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        loaded.problems.append(
            Problem(
                file,
                document.source_map.line_of(data, ("kind",)),
                "kind",
                "kind-known",
                f"kind is {kind!r}; expected one of {sorted(DEFINITION_KINDS)}",
            )
        )
        return
    try:
        value = model.model_validate(data)
    except ValidationError as exc:
        loaded.problems += validation_problems(exc, file, data, document.source_map)
        return
    if isinstance(value, AnalyzerSpec):
        loaded.analyzers.append(Sourced(value, file, data, document.source_map))
    else:
        loaded.procedures.append(Sourced(value, file, data, document.source_map))


def _read_text(path: Path, loaded: DefinitionSet) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        loaded.problems.append(Problem(str(path), None, "(file)", "file-readable", str(exc)))
        return None


def load_conversation_file(path: Path) -> DefinitionSet:
    """Load the conversations of a `.json` file (one object) or a `.jsonl` file (one a line)."""
    loaded = DefinitionSet()
    file = str(path)
    text = _read_text(path, loaded)
    if text is None:
        return loaded
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                _load_conversation(file, line, number, loaded)
    else:
        _load_conversation(file, text, 1, loaded)
    return loaded


def _load_conversation(file: str, text: str, first_line: int, loaded: DefinitionSet) -> None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        loaded.problems.append(
            Problem(
                file,
                first_line + exc.lineno - 1,
                "(file)",
                "json-syntax",
                f"invalid JSON: {exc.msg} (column {exc.colno})",
            )
        )
        return
    source_map = _json_source_map(text, first_line)
    try:
        conversation = Conversation.model_validate(data)
    except ValidationError as exc:
        # Conversation values are customer data: problems name the field, never echo the value.
        loaded.problems += validation_problems(exc, file, data, source_map, echo_input=False)
        return
    loaded.conversations.append(Sourced(conversation, file, data, source_map))


def _json_source_map(text: str, first_line: int) -> SourceMap:
    # JSON is (nearly) YAML, so the YAML composer can tell where each value is. If it cannot,
    # problems are still reported, at the first line.
    try:
        # PyYAML refuses tab indentation, which JSON allows; in JSON a raw tab can only be
        # whitespace, so spaces keep every line where it was.
        document = next(parse_documents(text.replace("\t", " ")), None)
    except SourceError:
        document = None
    if document is None:
        return SourceMap({(): first_line})
    offset = first_line - 1
    return SourceMap({loc: line + offset for loc, line in document.source_map.lines.items()})


def validation_problems(
    error: ValidationError, file: str, data: Any, source_map: SourceMap, *, echo_input: bool = True
) -> list[Problem]:
    """Turn a pydantic error into one located problem per error (and per broken rule)."""
    problems: list[Problem] = []
    for detail in error.errors():
        loc = tuple(detail["loc"])
        if detail["type"] == RULE_VIOLATIONS:
            for violation in detail["ctx"]["violations"]:
                # Rule locations are plain paths; only pydantic's own part carries union tags.
                full = (*_untagged(loc), *violation["loc"])
                problems.append(
                    Problem(
                        file,
                        source_map.line_of(data, full),
                        render_loc(full),
                        violation["rule"],
                        violation["message"],
                    )
                )
        else:
            path = _untagged(loc)
            problems.append(
                Problem(
                    file,
                    source_map.line_of(data, path),
                    render_loc(path),
                    detail["type"],
                    _message(detail, echo_input=echo_input),
                )
            )
    return problems


def _message(detail: Any, *, echo_input: bool) -> str:
    message = str(detail["msg"])
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    if detail["type"] in {"missing", "extra_forbidden"}:
        return message.lower()
    if not echo_input:
        return message
    return f"{message} (got {_short(detail.get('input'))})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _untagged(loc: Loc) -> Loc:
    kept: list[str | int] = []
    for position, part in enumerate(loc):
        after_index = position >= 2 and isinstance(loc[position - 1], int)
        if after_index and isinstance(part, str) and loc[position - 2] in _TAGGED_LISTS:
            continue
        kept.append(part)
    return tuple(kept)
