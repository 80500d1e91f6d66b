"""Parse YAML (and JSON, a subset of it) keeping the line of every value.

Errors must point at `file:line`, so documents are parsed twice over one text: PyYAML's composer
gives nodes with line marks, and the plain constructor gives the data. A `SourceMap` maps a
location inside the data (`("steps", 2, "arguments")`) to the line where it is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from schemas.rules import Loc


class SourceError(ValueError):
    """The text is not valid YAML/JSON, or repeats a key. `line` is 1-based when known."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


@dataclass
class SourceMap:
    """Lines of the values in one document, by location."""

    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, data: Any, loc: Loc) -> int | None:
        """The line of the deepest part of `loc` that exists in `data`.

        `loc` must be a path of keys and indices (strip pydantic's union tags first); a part
        that does not exist (a missing field) leaves the line at its parent.
        """
        best = self.lines.get(())
        path: tuple[str | int, ...] = ()
        node = data
        for part in loc:
            in_mapping = isinstance(node, dict) and part in node
            in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            if not (in_mapping or in_list):
                break
            node = node[part]
            path = (*path, part)
            best = self.lines.get(path, best)
        return best


@dataclass(frozen=True)
class Document:
    """One YAML document of a file: its data, its lines, and the line it starts on."""

    data: Any
    source_map: SourceMap
    start_line: int


def parse_documents(text: str) -> Iterator[Document]:
    """Every non-empty document in a YAML stream (`---` separated), with line maps.

    A syntax error stops the stream (nothing after it can be trusted); a problem inside one
    document (a repeated key) is raised for that document only, after the documents before it.
    """
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise SourceError(_yaml_message(exc), None if mark is None else mark.line + 1) from exc
    except yaml.YAMLError as exc:
        raise SourceError(str(exc), None) from exc
    for node in nodes:
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            continue
        yield _document(node)


def parse_documents_lenient(text: str) -> Iterator[Document | SourceError]:
    """Like `parse_documents`, but a problem in one document is yielded in its place, so the
    valid documents of the same file are still used."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        yield SourceError(_yaml_message(exc), None if mark is None else mark.line + 1)
        return
    except yaml.YAMLError as exc:
        yield SourceError(str(exc), None)
        return
    for node in nodes:
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            continue
        try:
            yield _document(node)
        except SourceError as exc:
            yield exc


def _document(node: yaml.Node) -> Document:
    source_map = SourceMap()
    _record_lines(node, (), source_map)
    constructor = yaml.SafeLoader("")
    try:
        data = constructor.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise SourceError(_yaml_message(exc), None if mark is None else mark.line + 1) from exc
    finally:
        constructor.dispose()
    return Document(data=data, source_map=source_map, start_line=node.start_mark.line + 1)


def _record_lines(node: yaml.Node, loc: Loc, source_map: SourceMap) -> None:
    source_map.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key in seen:
                raise SourceError(f"key {key!r} appears twice (first on line {seen[key]})", line)
            seen[key] = line
            if key is None:
                continue
            source_map.lines[(*loc, key)] = line
            _record_lines(value_node, (*loc, key), source_map)
            source_map.lines[(*loc, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*loc, index), source_map)


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    parts = [part for part in (exc.context, exc.problem) if part]
    return "invalid YAML: " + ", ".join(parts) if parts else "invalid YAML"
