"""Trigger patterns such as `onboard * vendor|add new vendor`.

`|` separates alternatives; `*` stands for any run of words (possibly none). Matching ignores
case and punctuation and looks for the pattern anywhere in the text.
"""

from __future__ import annotations

import re
from functools import lru_cache


class PatternError(ValueError):
    """A trigger pattern that cannot match anything sensible."""


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression for a trigger pattern."""
    alternatives = [alternative.strip() for alternative in pattern.split("|")]
    if any(not alternative for alternative in alternatives):
        raise PatternError(
            f"pattern {pattern!r} has an empty alternative (look for '||' or a '|' at an end)"
        )
    if any(not re.search(r"\w", alternative) for alternative in alternatives):
        raise PatternError(f"pattern {pattern!r} has an alternative without a word in it")
    return re.compile("|".join(f"(?:{_alternative(a)})" for a in alternatives), re.IGNORECASE)


def _alternative(alternative: str) -> str:
    tokens = alternative.split()
    # A leading or trailing `*` adds nothing to a search anywhere in the text.
    while tokens and tokens[0] == "*":
        tokens.pop(0)
    while tokens and tokens[-1] == "*":
        tokens.pop()
    parts: list[str] = []
    for word_or_star in tokens:
        if word_or_star == "*":
            parts.append(r"(?:\W+\w+)*?")
        else:
            words = re.findall(r"\w+", word_or_star)
            parts.append(r"\W+".join(re.escape(word) for word in words) if words else "")
    body = ""
    for part in parts:
        if not part:
            continue
        if part.startswith(r"(?:\W+"):
            body += part
        else:
            body += (r"\W+" if body else "") + part
    return rf"\b{body}\b"


def matches(pattern: str, text: str) -> bool:
    """Whether `text` contains something `pattern` describes."""
    return compile_pattern(pattern).search(text) is not None
