"""Procedure files into the procedure store: `posthoc procedures import`, and the procedure
folders every command loads (imported into the ledger's store, idempotently).

Two authoring formats:
- YAML (`.yaml`, `.yml`): `kind: procedure` documents, as `posthoc validate` reads them;
- markdown (`.md`): a free-form procedure whose body is its `content`, with the other fields in
  a YAML front matter block between `---` lines (`kind: procedure` may be left out).

Every problem is located (file, line, field, rule), as for every other definition file; the
valid procedures of a batch are still imported. Tool steps are not checked against any
analyzer here: a stored procedure describes the agent's own tools, and `tool-allowed` applies
only where an analyzer follows a procedure itself (`posthoc validate` with the analyzer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import ValidationError

from analyzers.definitions.checks import check_definitions
from analyzers.definitions.limits import InputLimits, active_limits
from analyzers.definitions.loading import (
    DEFINITION_SUFFIXES,
    DefinitionSet,
    Problem,
    Sourced,
    expand_paths,
    load_definition_file,
    validation_problems,
)
from analyzers.definitions.sourcemap import SourceError, parse_documents_lenient
from analyzers.procedures.store import ProceduralMemoryStore, StoreOutcome
from schemas.procedure import Procedure

MARKDOWN_SUFFIXES = (".md",)
PROCEDURE_SUFFIXES = DEFINITION_SUFFIXES + MARKDOWN_SUFFIXES
FRONT_MATTER = "---"


@dataclass
class LoadedProcedures:
    """Procedures read from files, and every problem found on the way."""

    procedures: list[Sourced[Procedure]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def load_procedure_files(
    paths: Iterable[Path | str],
    *,
    tenant_id: str | None = None,
    agent_id: str | None = None,
    limits: InputLimits | None = None,
) -> LoadedProcedures:
    """The procedures in `paths` (files and folders), scoped to `tenant_id`/`agent_id` where
    the file leaves them out (a file that names another is a problem, not overridden)."""
    limits = active_limits(limits)
    loaded = LoadedProcedures()
    found = DefinitionSet()
    for path in expand_paths(paths, PROCEDURE_SUFFIXES, loaded.problems):
        if path.suffix in MARKDOWN_SUFFIXES:
            found.extend(_load_markdown(path, limits))
            continue
        if path.suffix not in DEFINITION_SUFFIXES:
            loaded.problems.append(
                Problem(
                    str(path),
                    None,
                    "(file)",
                    "procedure-file",
                    f"not a procedure file: use one of {list(PROCEDURE_SUFFIXES)}",
                )
            )
            continue
        found.extend(load_definition_file(path, limits))
    loaded.problems += found.problems
    for analyzer in found.analyzers:
        loaded.problems.append(
            analyzer.problem(
                ("kind",),
                "procedure-file",
                f"analyzer {analyzer.value.name!r}: only procedures are imported into the store",
            )
        )
    scoped = [_scoped(item, tenant_id, agent_id, loaded.problems) for item in found.procedures]
    for item in scoped:
        if item is None:
            continue
        # Patterns and expressions, one procedure at a time (a bad one keeps only itself out).
        problems = check_definitions(DefinitionSet(procedures=[item]), limits)
        loaded.problems += problems
        if not problems:
            loaded.procedures.append(item)
    return loaded


def import_procedures(
    store: ProceduralMemoryStore, procedures: Sequence[Procedure]
) -> list[StoreOutcome]:
    """Store each procedure: an unchanged one is the version already stored, a changed one a
    new version; admin-written ones are approved, learned ones pending."""
    return [store.store(procedure) for procedure in procedures]


def _scoped(
    item: Sourced[Procedure], tenant_id: str | None, agent_id: str | None, problems: list[Problem]
) -> Sourced[Procedure] | None:
    value = item.value
    update: dict[str, str] = {}
    for field_name, wanted in (("tenant_id", tenant_id), ("agent_id", agent_id)):
        if wanted is None:
            continue
        declared = getattr(value, field_name)
        if declared is None:
            update[field_name] = wanted
        elif declared != wanted:
            option = "--tenant" if field_name == "tenant_id" else "--agent"
            problems.append(
                item.problem(
                    (field_name,),
                    "procedure-scope",
                    f"the file says {field_name} {declared!r} but {option} is {wanted!r}",
                )
            )
            return None
    return replace(item, value=value.model_copy(update=update)) if update else item


def _load_markdown(path: Path, limits: InputLimits) -> DefinitionSet:
    loaded = DefinitionSet()
    file = str(path)
    try:
        raw = path.read_bytes()[: limits.max_file_bytes + 1]
    except OSError as exc:
        problem = Problem(file, None, "(file)", "file-readable", exc.strerror or "unreadable")
        loaded.problems.append(problem)
        return loaded
    if len(raw) > limits.max_file_bytes:
        message = f"larger than {limits.max_file_bytes} bytes"
        loaded.problems.append(Problem(file, None, "(file)", "file-size", message))
        return loaded
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        message = f"not valid UTF-8 at byte {exc.start}"
        loaded.problems.append(Problem(file, line, "(file)", "file-readable", message))
        return loaded
    lines = text.splitlines()
    end = next(
        (i for i, line in enumerate(lines[1:], start=1) if line.strip() == FRONT_MATTER), None
    )
    if not lines or lines[0].strip() != FRONT_MATTER or end is None:
        loaded.problems.append(
            Problem(
                file,
                1,
                "(file)",
                "markdown-front-matter",
                "a markdown procedure starts with YAML front matter between '---' lines "
                "(name, trigger, ...); the body after it is the procedure's content",
            )
        )
        return loaded
    front = "\n".join(lines[1:end])
    body = "\n".join(lines[end + 1 :]).strip()
    documents = list(parse_documents_lenient(front, limits))
    if len(documents) != 1 or isinstance(documents[0], SourceError):
        error = documents[0] if documents else None
        message = str(error) if isinstance(error, SourceError) else "the front matter is empty"
        line = error.line if isinstance(error, SourceError) and error.line else 0
        loaded.problems.append(Problem(file, line + 1, "(front matter)", "yaml-syntax", message))
        return loaded
    document = documents[0]
    data = document.data
    if not isinstance(data, dict):
        message = f"the front matter is a mapping of fields, not {type(data).__name__}"
        loaded.problems.append(Problem(file, 2, "(front matter)", "document-mapping", message))
        return loaded
    if "content" in data or "steps" in data:
        message = "the markdown body is the content: leave 'content' and 'steps' out of it"
        loaded.problems.append(Problem(file, 2, "(front matter)", "procedure-form", message))
        return loaded
    data = {"kind": "procedure", **data, "content": body}
    try:
        value = Procedure.model_validate(data)
    except ValidationError as exc:
        found = validation_problems(exc, file, data, document.source_map)
        # Lines in the map count from the front matter's first line, the file's second.
        loaded.problems += [replace(p, line=None if p.line is None else p.line + 1) for p in found]
        return loaded
    loaded.procedures.append(Sourced(value, file, data, document.source_map))
    return loaded
