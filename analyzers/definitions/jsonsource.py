"""Parse one JSON record within limits, and find the line of a value only when it is asked for.

`json.loads` is fast and C-backed; what it lacks is limits and lines. Number literals go
through hooks that refuse oversized or non-finite numbers; nesting beyond the parser's
recursion limit is caught. Lines come from a small tokenizer that runs only when a problem
(or a caller) needs one, so a valid 100k-turn conversation pays nothing for them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from analyzers.definitions.limits import InputLimits
from analyzers.definitions.sourcemap import SourceMap
from schemas.rules import Loc

# A JSON string (unrolled so a long string is one linear match), a structural character, or
# any other literal (numbers, true, false, null).
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+')


class JsonProblem(ValueError):
    """A record that is not JSON within limits; `line` is 1-based inside the file."""

    def __init__(self, rule: str, message: str, line: int) -> None:
        super().__init__(message)
        self.rule = rule
        self.line = line


class _NumberRefused(ValueError):
    def __init__(self, literal: str, reason: str) -> None:
        super().__init__(reason)
        self.literal = literal


def parse_record(text: str, first_line: int, limits: InputLimits) -> Any:
    """The data of one JSON record, or a located `JsonProblem` (never echoing the text)."""

    def parse_number(literal: str, convert: type[int] | type[float]) -> int | float:
        if len(literal) > limits.max_number_chars:
            raise _NumberRefused(
                literal,
                f"a number of {len(literal)} characters; at most {limits.max_number_chars} "
                "are accepted",
            )
        value = convert(literal)
        if isinstance(value, float) and not math.isfinite(value):
            raise _NumberRefused(literal, "a number too large to represent")
        return value

    def refuse_constant(literal: str) -> Any:
        raise _NumberRefused(literal, f"{literal} is not a JSON number")

    try:
        return json.loads(
            text,
            parse_int=lambda s: parse_number(s, int),
            parse_float=lambda s: parse_number(s, float),
            parse_constant=refuse_constant,
        )
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg} (column {exc.colno})"
        raise JsonProblem("json-syntax", message, first_line + exc.lineno - 1) from None
    except _NumberRefused as exc:
        line = _line_of_literal(text, exc.literal)
        raise JsonProblem("number-size", str(exc), first_line + line - 1) from None
    except RecursionError:
        line = _line_of_depth(text, limits.max_depth)
        message = f"nested deeper than {limits.max_depth} levels"
        raise JsonProblem("nesting-depth", message, first_line + line - 1) from None


class LazyJsonSourceMap(SourceMap):
    """A source map of JSON text whose lines are worked out on the first `line_of` call."""

    def __init__(self, text: str, first_line: int) -> None:
        super().__init__({(): first_line})
        self._text: str | None = text
        self._first_line = first_line

    def line_of(self, data: Any, loc: Loc) -> int | None:
        """The line of `loc`, tokenizing the text once on first use."""
        if self._text is not None:
            self.lines = json_lines(self._text, self._first_line)
            self._text = None
        return super().line_of(data, loc)


def json_lines(text: str, first_line: int = 1) -> dict[Loc, int]:
    """The line of every value in a JSON text, by location (keys at the line of the key)."""
    lines: dict[Loc, int] = {(): first_line}
    # One frame per open container: [path, is_object, current key or index, expecting a key].
    frames: list[list[Any]] = []
    for piece, line in _tokens(text, first_line):
        top = frames[-1] if frames else None
        if piece in ("}", "]"):
            if frames:
                frames.pop()
        elif piece == ",":
            _next_member(top)
        elif piece == ":":
            continue
        elif top is not None and top[1] and top[3]:
            key = _key(piece)
            top[2], top[3] = key, False
            lines[(*top[0], key)] = line
        else:
            path = _value_path(top)
            if path is not None:
                lines.setdefault(path, line)
            if piece in ("{", "["):
                frames.append([path if path is not None else (), piece == "{", 0, piece == "{"])
    return lines


def _next_member(frame: list[Any] | None) -> None:
    if frame is None:
        return
    if frame[1]:
        frame[3] = True  # an object: a key comes next
    else:
        frame[2] += 1  # an array: the next index


def _value_path(frame: list[Any] | None) -> Loc | None:
    if frame is None:
        return None
    return (*frame[0], frame[2])


def _key(token: str) -> str:
    if "\\" not in token:
        return token[1:-1]
    try:
        key = json.loads(token)
    except json.JSONDecodeError:
        return token[1:-1]
    return key if isinstance(key, str) else token[1:-1]


def _tokens(text: str, first_line: int = 1) -> Iterator[tuple[str, int]]:
    line, position = first_line, 0
    for match in _TOKEN.finditer(text):
        line += text.count("\n", position, match.start())
        position = match.start()
        yield match.group(0), line


def _line_of_literal(text: str, literal: str) -> int:
    for piece, line in _tokens(text):
        if piece == literal:
            return line
    return 1


def _line_of_depth(text: str, max_depth: int) -> int:
    depth = 0
    for piece, line in _tokens(text):
        if piece in ("{", "["):
            depth += 1
            if depth > max_depth:
                return line
        elif piece in ("}", "]"):
            depth -= 1
    return 1
