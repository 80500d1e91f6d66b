"""Parse YAML (and JSON, a subset of it) keeping the line of every value.

Errors must point at `file:line`, so documents are parsed twice over one text: PyYAML's composer
gives nodes with line marks, and the plain constructor gives the data. A `SourceMap` maps a
location inside the data (`("steps", 2, "arguments")`) to the line where it is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from analyzers.definitions.limits import DEFAULT_LIMITS, InputLimits
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


def parse_documents(text: str, limits: InputLimits = DEFAULT_LIMITS) -> Iterator[Document]:
    """Every non-empty document in a YAML stream (`---` separated), with line maps.

    A syntax error stops the stream (nothing after it can be trusted); a problem inside one
    document (a repeated key, an alias bomb) is raised for that document only, after the
    documents before it.
    """
    for document in parse_documents_lenient(text, limits):
        if isinstance(document, SourceError):
            raise document
        yield document


def parse_documents_lenient(
    text: str, limits: InputLimits = DEFAULT_LIMITS
) -> Iterator[Document | SourceError]:
    """Like `parse_documents`, but a problem in one document is yielded in its place, so the
    valid documents of the same file are still used."""
    too_deep = _flow_nesting_beyond(text, limits.max_depth)
    if too_deep is not None:
        yield SourceError(f"invalid YAML: nested deeper than {limits.max_depth} levels", too_deep)
        return
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        yield SourceError(_yaml_message(exc), None if mark is None else mark.line + 1)
        return
    except yaml.YAMLError as exc:
        yield SourceError(str(exc), None)
        return
    except RecursionError:
        # PyYAML's composer recurses once per nesting level.
        yield SourceError(f"invalid YAML: nested deeper than {limits.max_depth} levels", None)
        return
    for node in nodes:
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            continue
        try:
            yield _document(node, limits)
        except SourceError as exc:
            yield exc


def _flow_nesting_beyond(text: str, max_depth: int) -> int | None:
    """The line where `[`/`{` brackets first nest deeper than `max_depth`, else None.

    PyYAML's scanner does work per open bracket for every token, so 3,000 nested brackets
    take it 25 s: count them first. Brackets inside quoted strings are counted too; the limit
    is far above the nesting of any real definition.
    """
    depth = 0
    for match in _BRACKET.finditer(text):
        depth += 1 if match.group(0) in "[{" else -1
        if depth > max_depth:
            return text.count("\n", 0, match.start()) + 1
    return None


_BRACKET = re.compile(r"[\[\]{}]")


def _document(node: yaml.Node, limits: InputLimits) -> Document:
    check_node_graph(node, limits)
    source_map = SourceMap()
    _record_lines(node, (), source_map)
    constructor = yaml.SafeLoader("")
    try:
        data = constructor.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise SourceError(_yaml_message(exc), None if mark is None else mark.line + 1) from exc
    except ValueError as exc:
        # int() refuses literals over Python's digit limit; say so without quoting the value.
        raise SourceError(
            f"invalid YAML: a value cannot be read ({type(exc).__name__})",
            node.start_mark.line + 1,
        ) from exc
    finally:
        constructor.dispose()
    return Document(data=data, source_map=source_map, start_line=node.start_mark.line + 1)


def check_node_graph(root: yaml.Node, limits: InputLimits) -> None:
    """Refuse a document whose aliases loop back into themselves, that nests too deep, or that
    has more than `max_yaml_nodes` nodes once every alias is expanded (billion laughs).

    Aliases are shared nodes in the composed graph, so expanded sizes are counted once per
    node (memoised), in time linear in the text, without expanding anything.
    """
    expanded: dict[int, int] = {}
    on_path: set[int] = set()
    # Iterative post-order walk: (node, depth, children already pushed).
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size = 1 + sum(expanded[id(child)] for child in _children(node))
            if size > limits.max_yaml_nodes:
                raise SourceError(
                    f"the document expands to more than {limits.max_yaml_nodes} values once its "
                    "aliases (*name) are expanded; write the values out or raise the limit",
                    node.start_mark.line + 1,
                )
            expanded[key] = size
            continue
        if key in expanded:
            continue
        if key in on_path:
            raise SourceError(
                "an alias (*name) refers to the anchor (&name) it is inside of, which makes an "
                "endless value",
                node.start_mark.line + 1,
            )
        if depth > limits.max_depth:
            raise SourceError(
                f"nested deeper than {limits.max_depth} levels", node.start_mark.line + 1
            )
        on_path.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) in on_path:
                raise SourceError(
                    "an alias (*name) refers to the anchor (&name) it is inside of, which "
                    "makes an endless value",
                    child.start_mark.line + 1,
                )
            if id(child) not in expanded:
                stack.append((child, depth + 1, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


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
