"""Load analyzers, procedures, schedules and conversations from files, with located problems.

`load_paths` reads YAML definitions (`kind: analyzer`, `kind: procedure` or `kind: schedule`,
several documents per file allowed) and JSON / JSON Lines conversations from files and
directories. It never stops at the first problem: every valid definition is kept and every
problem is reported with its file, line, field and the rule it breaks. Hostile input is bounded
by `InputLimits`: JSON Lines files are streamed a line at a time, files read whole are
size-checked first, and an oversized, too-deep or unstorable record is a problem for that
record only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from analyzers.definitions.jsonsource import JsonProblem, LazyJsonSourceMap, parse_record
from analyzers.definitions.limits import (
    InputLimits,
    active_limits,
    conversation_violations,
)
from analyzers.definitions.sourcemap import (
    Document,
    SourceError,
    SourceMap,
    parse_documents_lenient,
)
from schemas.analyzer import AnalyzerSpec
from schemas.conversation import Conversation
from schemas.procedure import Procedure
from schemas.rules import RULE_VIOLATIONS, Loc, render_loc
from schemas.schedule import ScheduleSpec

DEFINITION_SUFFIXES = (".yaml", ".yml")
CONVERSATION_SUFFIXES = (".json", ".jsonl")
DEFINITION_KINDS: dict[str, type[AnalyzerSpec] | type[Procedure] | type[ScheduleSpec]] = {
    "analyzer": AnalyzerSpec,
    "procedure": Procedure,
    "schedule": ScheduleSpec,
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
    schedules: list[Sourced[ScheduleSpec]] = field(default_factory=list)

    def extend(self, other: DefinitionSet) -> None:
        """Add everything from `other` to this set."""
        self.analyzers += other.analyzers
        self.procedures += other.procedures
        self.schedules += other.schedules
        self.conversations += other.conversations
        self.problems += other.problems


def load_paths(paths: Iterable[Path | str], limits: InputLimits | None = None) -> DefinitionSet:
    """Load every definition and conversation under `paths` (files or directories).

    A conversation whose id repeats one loaded earlier is a problem for the later record (see
    `drop_batch_duplicates`).
    """
    limits = active_limits(limits)
    loaded = DefinitionSet()
    for path in expand_paths(paths, DEFINITION_SUFFIXES + CONVERSATION_SUFFIXES, loaded.problems):
        if path.suffix in DEFINITION_SUFFIXES:
            loaded.extend(load_definition_file(path, limits))
        else:
            loaded.extend(load_conversation_file(path, limits))
    loaded.conversations = drop_batch_duplicates(loaded.conversations, loaded.problems)
    return loaded


def drop_batch_duplicates(
    conversations: list[Sourced[Conversation]], problems: list[Problem]
) -> list[Sourced[Conversation]]:
    """Report every conversation whose (tenant, id) came earlier in the same batch.

    A repeat with the same content is dropped (it would only be analysed twice); a repeat with
    different content is kept beside the first, so both versions are analysed, and the problem
    says so. Content is compared only for repeats, so a clean batch pays one set lookup each.
    """
    first: dict[tuple[str, str], Sourced[Conversation]] = {}
    kept: list[Sourced[Conversation]] = []
    for sourced in conversations:
        key = (sourced.value.tenant_id, sourced.value.conversation_id)
        earlier = first.get(key)
        if earlier is None:
            first[key] = sourced
            kept.append(sourced)
            continue
        same = earlier.value.content_hash() == sourced.value.content_hash()
        where = f"{earlier.file}:{earlier.source_map.lines.get((), '?')}"
        consequence = (
            "with the same content; this copy is ignored"
            if same
            else "with different content; both versions are kept and analysed"
        )
        problems.append(
            sourced.problem(
                ("conversation_id",),
                "conversation-id-unique-in-batch",
                f"conversation {key[1]!r} of tenant {key[0]!r} also appears at {where}, "
                f"{consequence}",
            )
        )
        if not same:
            kept.append(sourced)
    return kept


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


def load_definition_file(path: Path, limits: InputLimits | None = None) -> DefinitionSet:
    """Load the analyzers and procedures of one YAML file."""
    limits = active_limits(limits)
    loaded = DefinitionSet()
    file = str(path)
    text = _read_text(path, loaded, limits)
    if text is None:
        return loaded
    for document in parse_documents_lenient(text, limits):
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
    elif isinstance(value, ScheduleSpec):
        loaded.schedules.append(Sourced(value, file, data, document.source_map))
    else:
        loaded.procedures.append(Sourced(value, file, data, document.source_map))


def _read_text(path: Path, loaded: DefinitionSet, limits: InputLimits) -> str | None:
    """The text of a file read whole, if it is within `max_file_bytes` and valid UTF-8."""
    file = str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(limits.max_file_bytes + 1)
    except OSError as exc:
        loaded.problems.append(
            Problem(file, None, "(file)", "file-readable", exc.strerror or type(exc).__name__)
        )
        return None
    if len(raw) > limits.max_file_bytes:
        loaded.problems.append(
            Problem(
                file,
                None,
                "(file)",
                "file-size",
                f"larger than {limits.max_file_bytes} bytes; split it (JSON Lines files are "
                "read a line at a time and have no total limit)",
            )
        )
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        loaded.problems.append(
            Problem(file, line, "(file)", "file-readable", f"not valid UTF-8 at byte {exc.start}")
        )
        return None


def load_conversation_file(path: Path, limits: InputLimits | None = None) -> DefinitionSet:
    """Load the conversations of a `.json` file (one object) or a `.jsonl` file (one a line)."""
    limits = active_limits(limits)
    loaded = DefinitionSet()
    file = str(path)
    if path.suffix != ".jsonl":
        text = _read_text(path, loaded, limits)
        if text is not None:
            _load_conversation(file, text, 1, loaded, limits)
        return loaded
    try:
        for number, line in _jsonl_lines(path, file, loaded.problems, limits):
            _load_conversation(file, line, number, loaded, limits)
    except OSError as exc:
        loaded.problems.append(
            Problem(file, None, "(file)", "file-readable", exc.strerror or type(exc).__name__)
        )
    return loaded


def _jsonl_lines(
    path: Path, file: str, problems: list[Problem], limits: InputLimits
) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a JSON Lines file with their numbers, read one at a time.

    A line over `max_line_bytes` is skipped without being held in memory; a line that is not
    UTF-8 is a problem for that line only.
    """
    with path.open("rb") as handle:
        number = 0
        while raw := handle.readline(limits.max_line_bytes + 1):
            number += 1
            if len(raw) > limits.max_line_bytes and not raw.endswith(b"\n"):
                while (rest := handle.readline(1024 * 1024)) and not rest.endswith(b"\n"):
                    pass
                problems.append(
                    Problem(
                        file,
                        number,
                        "(line)",
                        "line-size",
                        f"line longer than {limits.max_line_bytes} bytes",
                    )
                )
                continue
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                problems.append(
                    Problem(
                        file, number, "(line)", "line-utf-8", f"not valid UTF-8 at byte {exc.start}"
                    )
                )
                continue
            if line.strip():
                yield number, line


def _load_conversation(
    file: str, text: str, first_line: int, loaded: DefinitionSet, limits: InputLimits
) -> None:
    try:
        data = parse_record(text, first_line, limits)
    except JsonProblem as exc:
        loaded.problems.append(Problem(file, exc.line, "(file)", exc.rule, str(exc)))
        return
    source_map = LazyJsonSourceMap(text, first_line)
    violations = conversation_violations(data, limits)
    if violations:
        loaded.problems += [
            Problem(
                file,
                source_map.line_of(data, violation.loc),
                render_loc(violation.loc),
                violation.rule,
                violation.message,
            )
            for violation in violations
        ]
        return
    try:
        conversation = Conversation.model_validate(data)
    except ValidationError as exc:
        # Conversation values are customer data: problems name the field, never echo the value.
        loaded.problems += validation_problems(exc, file, data, source_map, echo_input=False)
        return
    loaded.conversations.append(Sourced(conversation, file, data, source_map))


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
