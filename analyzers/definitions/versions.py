"""Analyzer version strings: how they are ordered and how `name@version` is written.

Version strings are free text chosen by whoever writes the YAML ("1", "2", "1.10.0", "v3",
"2026-11-30"). They are ordered the way a person reads them: split into runs of digits and runs
of other characters, digit runs compared as numbers, other runs as text (case-insensitively),
piece by piece; a version that is a prefix of another is older ("1.2" < "1.2.1"). So "10" is
newer than "9", "1.10" newer than "1.9", "v12" newer than "v3" and "2026-12-01" newer than
"2026-11-30". Two strings that compare equal this way ("01" and "1") are ordered by their
text, so the order is total. The newest version of an analyzer is the one a bare name selects.
"""

from __future__ import annotations

import re

# ASCII digits only: "¹" or "٣" are text here, since int() would refuse some of them.
_PIECES = re.compile(r"[0-9]+|[^0-9]+")
_DIGITS = frozenset("0123456789")
SEPARATOR = "@"
"""Between an analyzer's name and a version in a selector: `quality@3`."""


def version_key(version: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    """A sort key for version strings; see the module docstring for the order."""
    pieces: list[tuple[int, int | str]] = []
    for piece in _PIECES.findall(version):
        # Numbers before text at the same position, so "1.2" < "1.2a" and "1a" < "1.0" hold
        # consistently; (kind, value) keeps ints and strs from being compared to each other.
        pieces.append((0, int(piece)) if piece[0] in _DIGITS else (1, piece.lower()))
    return tuple(pieces), version


def newest(versions: list[str]) -> str:
    """The newest of some version strings (ValueError for none)."""
    if not versions:
        raise ValueError("no versions to choose the newest of")
    return max(versions, key=version_key)


def parse_selector(selector: str) -> tuple[str, str | None]:
    """`name` -> (name, None); `name@version` -> (name, version)."""
    name, separator, version = selector.partition(SEPARATOR)
    return name, (version if separator else None)


def selector(name: str, version: str) -> str:
    """`name@version`."""
    return f"{name}{SEPARATOR}{version}"
